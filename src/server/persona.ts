/**
 * The server's persona layer: the traits it serves (vectors loaded once), and per request the
 * monitoring probes, the steering, the thresholds and the action, validated into engine form;
 * after generation, the `persona` object every reply carries.
 */
import type { ResolvedProbes, SampleProjections } from "../engine/capture.js";
import type { Model } from "../engine/Model.js";
import { type ResolvedSteering, type SteeringSpec } from "../engine/steering.js";
import { PersonaError } from "../errors.js";
import { type LayerMatrix, row } from "../vectors/format.js";
import { listTraitVectors } from "../vectors/registry.js";
import { loadVectorSource } from "../vectors/steer.js";
import type { PersonaField, SteerItem } from "./schema.js";

export interface ServedTrait {
  name: string;
  path: string;
  matrix: LayerMatrix;
  /** The layer monitored (and steered when a request names none). */
  layer: number;
}

export type ActionType = "report" | "steer" | "refuse";

export interface PersonaDefaults {
  /** Traits monitored when a request has no `persona.monitor`. */
  monitor: readonly string[];
  thresholds: Readonly<Record<string, number>>;
  action: { type: ActionType; steer?: readonly SteerItem[] };
  /** Steering applied when a request has no `persona.steer`. */
  steer: readonly SteerItem[];
}

export interface ResolvedPersona {
  /** Monitored traits, in probe order. */
  monitor: readonly ServedTrait[];
  probes: ResolvedProbes | undefined;
  steering: ResolvedSteering;
  thresholds: ReadonlyMap<string, number>;
  action: ActionType;
  /** Extra steering for `action: steer`. */
  actionSteering: ResolvedSteering | undefined;
  trace: boolean;
  /** Human-readable steering, for the dashboard. */
  steerSummary: string[];
}

/** Per monitored trait, as returned in `persona.<trait>`. */
export interface TraitReport {
  layer: number;
  prompt_projection: number | null;
  response_projection: number | null;
  threshold: number | null;
  flagged: boolean;
  /** Which projection crossed the threshold first: the prompt's (before generating) or the reply's mean. */
  fired: "prompt" | "response" | null;
  /** The action this trait's crossing triggered, if any. */
  action: ActionType | null;
  trace?: number[];
}

export type PersonaReport = Record<string, TraitReport>;

/**
 * Loads the traits to serve: `names`, or every trait registered for the model. `layers` overrides
 * a trait's layer; otherwise its vectors' best layer, else the middle layer.
 */
export async function loadServedTraits(model: Model, names: readonly string[] | undefined, layers: Readonly<Record<string, number>> = {}): Promise<Map<string, ServedTrait>> {
  const wanted = names ?? [...new Set(listTraitVectors(model.info.path).filter((r) => !r.shadowed).map((r) => r.trait))];
  const out = new Map<string, ServedTrait>();
  for (const name of wanted) {
    const v = await loadVectorSource(name, model.info);
    const layer = layers[name] ?? v.meta.bestLayer ?? Math.ceil(model.info.nLayer / 2);
    if (!Number.isInteger(layer) || layer < 1 || layer > model.info.nLayer) {
      throw new PersonaError("E_SHAPE", `trait ${name}: layer ${layer} is out of range 1..${model.info.nLayer}`);
    }
    out.set(name, { name, path: v.path, matrix: v.matrix, layer });
  }
  for (const name of Object.keys(layers)) if (!out.has(name)) throw new PersonaError("E_NOT_FOUND", `a layer is set for ${name}, which is not served`);
  return out;
}

export class PersonaService {
  private readonly defaultSteering: ResolvedSteering;
  private readonly defaultActionSteering: ResolvedSteering | undefined;

  constructor(
    private readonly model: Model,
    readonly traits: ReadonlyMap<string, ServedTrait>,
    readonly defaults: PersonaDefaults,
  ) {
    // Checked once at startup so a bad config fails there, not on the first request.
    for (const t of [...defaults.monitor, ...Object.keys(defaults.thresholds)]) this.trait(t);
    this.defaultSteering = this.steering(defaults.steer);
    this.defaultActionSteering = defaults.action.steer ? this.steering(defaults.action.steer) : undefined;
  }

  private trait(name: string): ServedTrait {
    const t = this.traits.get(name);
    if (!t) {
      const known = [...this.traits.keys()];
      throw new PersonaError("E_NOT_FOUND", `trait "${name}" is not served here${known.length ? ` (served: ${known.join(", ")})` : " (no traits are served)"}`);
    }
    return t;
  }

  steering(items: readonly SteerItem[]): ResolvedSteering {
    const specs: SteeringSpec[] = items.map((s, i) => {
      const where = items.length > 1 ? ` (steer #${i + 1})` : "";
      if (s.trait !== undefined) {
        const t = this.trait(s.trait);
        const layer = s.layer ?? t.layer;
        if (!Number.isInteger(layer) || layer < 1 || layer > this.model.info.nLayer) {
          throw new PersonaError("E_SHAPE", `layer ${layer} is out of range 1..${this.model.info.nLayer}${where}`);
        }
        return { vector: Float32Array.from(row(t.matrix, layer)), layer, coef: s.coef, positions: s.positions, mode: s.mode, bound: s.bound };
      }
      if (s.layer === undefined) throw new PersonaError("E_BAD_STEER_ARG", `a steering with raw vectors needs a layer${where}`);
      return { vector: Float32Array.from(s.vectors!), layer: s.layer, coef: s.coef, positions: s.positions, mode: s.mode, bound: s.bound };
    });
    return this.model.steering(specs);
  }

  resolve(field: PersonaField | undefined): ResolvedPersona {
    const d = this.defaults;
    const thresholds = new Map(Object.entries(field?.thresholds ?? d.thresholds));
    // A threshold on a trait implies watching it.
    const names = [...new Set([...(field?.monitor ?? d.monitor), ...thresholds.keys()])];
    const monitor = names.map((n) => this.trait(n));
    const trace = field?.trace ?? false;
    const probes = monitor.length
      ? this.model.probes(
          monitor.map((t) => ({ layer: t.layer, vector: Float32Array.from(row(t.matrix, t.layer)) })),
          { perToken: trace },
        )
      : undefined;
    const steerItems = field?.steer ?? d.steer;
    const steering = field?.steer ? this.steering(field.steer) : this.defaultSteering;
    const action = field?.action ?? d.action;
    let actionSteering: ResolvedSteering | undefined;
    if (action.type === "steer") {
      actionSteering = field?.action ? (action.steer ? this.steering(action.steer) : undefined) : this.defaultActionSteering;
      if (!actionSteering?.length) throw new PersonaError("E_BAD_STEER_ARG", "action steer needs a steer list to apply when a threshold is crossed");
    }
    return {
      monitor,
      probes,
      steering,
      thresholds,
      action: action.type,
      actionSteering,
      trace,
      steerSummary: steerItems.map(describeSteer),
    };
  }
}

export function describeSteer(s: SteerItem): string {
  const src = s.trait ?? "vector";
  return `${src}:${s.layer ?? "best"}:${s.coef}:${s.positions}:${s.mode}${s.mode === "cap" ? `(${s.bound})` : ""}`;
}

/** Traits whose last-prompt-token projection crosses its threshold (these fire the action). */
export function crossedAtPrompt(p: ResolvedPersona, promptLast: Float64Array): string[] {
  return p.monitor.filter((t, k) => {
    const th = p.thresholds.get(t.name);
    return th !== undefined && promptLast[k]! > th;
  }).map((t) => t.name);
}

/** The `persona` object of a reply. `promptLast` may be known without `projections` (a refused request). */
export function buildReport(
  p: ResolvedPersona,
  promptLast: Float64Array | undefined,
  projections: SampleProjections | undefined,
  actionTaken: { type: ActionType; traits: readonly string[] } | null,
): PersonaReport {
  const report: PersonaReport = {};
  const nProbes = p.monitor.length;
  p.monitor.forEach((t, k) => {
    const threshold = p.thresholds.get(t.name) ?? null;
    const prompt = promptLast ? promptLast[k]! : null;
    const response = projections && projections.nResponseTokens > 0 ? projections.responseAvg[k]! : null;
    const fired = threshold === null ? null : prompt !== null && prompt > threshold ? "prompt" : response !== null && response > threshold ? "response" : null;
    const entry: TraitReport = {
      layer: t.layer,
      prompt_projection: prompt,
      response_projection: response,
      threshold,
      flagged: fired !== null,
      fired,
      action: actionTaken?.traits.includes(t.name) ? actionTaken.type : fired ? "report" : null,
    };
    if (p.trace) {
      const per = projections?.perToken;
      entry.trace = per ? Array.from({ length: per.length / nProbes }, (_, i) => per[i * nProbes + k]!) : [];
    }
    report[t.name] = entry;
  });
  return report;
}
