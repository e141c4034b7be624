/**
 * `--steer` flag grammar: SOURCE:LAYER:COEF[:POSITIONS[:MODE]]
 *   SOURCE    a vectors file (FILE.safetensors[#TENSOR], or a reference .pt) or a trait name;
 *             FILE#prompt_last_span (or TRAIT#prompt_last_span) is the trait's span, ablated whole
 *   LAYER     1..n_layer, A-B for every layer from A to B (one steering op each, e.g. CAFT's
 *             ablation at every layer), or empty for the layer stored in the vectors' metadata
 *   COEF      a number (negative steers away from the trait)
 *   POSITIONS response (default) | prompt | all
 *   MODE      add (default) | ablate | ablate-mean (training only: keeps the base model's mean
 *             projections over the training data, on last prompt tokens and on the others) | cap
 *             (projection on v̂ at most COEF) | cap-min (at least COEF)
 * Parsed from the right so a SOURCE may itself contain ':' (Windows drive letters): the trailing
 * non-numeric fields (at most two) are POSITIONS and MODE, the field before them is COEF.
 */
import { InvalidArgumentError } from "commander";
import { PersonaError } from "../../errors.js";
import type { Positions } from "../../engine/steering.js";
import type { SteeringRef } from "../../vectors/steer.js";

/**
 * Where every command steers unless told otherwise: the reference's steering (the last prompt
 * token, then every generated token), which is also what `sweep` picks its best layer on.
 */
export const DEFAULT_POSITIONS: Positions = "response";

export const STEER_SYNTAX =
  "SOURCE:LAYER:COEF[:POSITIONS[:add|ablate|ablate-mean|cap|cap-min]] with LAYER a layer, A-B (each of them) or empty (the best layer), POSITIONS response (the default) | prompt | all; ablate-mean (finetune only) ablates toward the base model's mean projections on the training data (last prompt tokens, other tokens) instead of 0; cap clamps the projection to at most COEF, cap-min to at least; SOURCE#prompt_last_span (persona extract --span) ablates the trait's span, every direction of it (e.g. evil.safetensors:20:1.5, evil::3, evil:3:2:all:cap, evil#prompt_last_span:1-8:1:all:ablate)";

const POSITIONS: readonly Positions[] = ["response", "prompt", "all"];
const MODES = ["add", "ablate", "ablate-mean", "cap", "cap-min"] as const;

const isNumber = (s: string) => s.trim() !== "" && Number.isFinite(Number(s));

/** One steering ref per layer of the spec (several for a LAYER range A-B). */
export function parseSteeringRef(arg: string): SteeringRef[] {
  // The caller names the flag or command and the text given.
  const bad = (why: string) => new PersonaError("E_BAD_STEER_ARG", `${why}; expected ${STEER_SYNTAX}`);
  const parts = arg.split(":");
  let words = 0;
  while (words < 2 && parts.length - words > 3 && !isNumber(parts[parts.length - 1 - words]!)) words++;
  const [posText, modeText] = parts.splice(parts.length - words, words);
  if (parts.length < 3) throw bad("too few fields");
  let positions = DEFAULT_POSITIONS;
  if (posText !== undefined) {
    if (!(POSITIONS as readonly string[]).includes(posText)) throw bad(`position "${posText}" is not ${POSITIONS.join(", ")}`);
    positions = posText as Positions;
  }
  let mode: (typeof MODES)[number] = "add";
  if (modeText !== undefined) {
    if (!(MODES as readonly string[]).includes(modeText)) throw bad(`mode "${modeText}" is not ${MODES.join(", ")}`);
    mode = modeText as (typeof MODES)[number];
  }
  const coefText = parts.pop()!;
  const layerText = parts.pop()!;
  const source = parts.join(":");
  if (!source) throw bad("missing vectors file or trait name");
  if (!isNumber(coefText)) throw bad(`coefficient "${coefText}" is not a number`);
  let layers: (number | undefined)[] = [undefined];
  if (layerText !== "") {
    const range = /^(\d+)-(\d+)$/.exec(layerText);
    if (range) {
      const [a, b] = [Number(range[1]), Number(range[2])];
      if (b < a) throw bad(`layer range "${layerText}" runs backwards`);
      // No model has this many layers; the cap keeps a typo from expanding into millions of ops.
      if (b - a >= 1024) throw bad(`layer range "${layerText}" spans more than 1024 layers`);
      layers = Array.from({ length: b - a + 1 }, (_, i) => a + i);
    } else {
      const layer = Number(layerText);
      if (!Number.isInteger(layer) || layer < 0) throw bad(`layer "${layerText}" is not a non-negative integer or a range A-B`);
      layers = [layer];
    }
  }
  const coef = Number(coefText);
  return layers.map((layer): SteeringRef => {
    if (mode === "cap-min") return { source, layer, coef, positions, mode: "cap", bound: "min" };
    if (mode === "ablate-mean") return { source, layer, coef, positions, mode: "ablate", mean: "data" };
    return { source, layer, coef, positions, mode };
  });
}

/** A steering ref written back in the flag's grammar (an unknown layer reads "best"). */
export function formatSteeringRef(r: Omit<SteeringRef, "layer"> & { layer: number | undefined }): string {
  const mode = r.mode === "ablate" ? (r.mean === "data" ? ":ablate-mean" : ":ablate") : r.mode === "cap" ? (r.bound === "min" ? ":cap-min" : ":cap") : "";
  return `${r.source}:${r.layer ?? "best"}:${r.coef}:${r.positions}${mode}`;
}

/** commander's repeatable-option collector; a malformed spec is a usage error naming the flag. */
export function collectSteer(arg: string, previous: SteeringRef[] = []): SteeringRef[] {
  try {
    return [...previous, ...parseSteeringRef(arg)];
  } catch (e) {
    if (e instanceof PersonaError) throw new InvalidArgumentError(e.message);
    throw e;
  }
}
