/**
 * `--steer` flag grammar: SOURCE:LAYER:COEF[:POSITIONS[:MODE]]
 *   SOURCE    a vectors file (FILE.safetensors[#TENSOR], or a reference .pt) or a trait name
 *   LAYER     1..n_layer, or empty for the layer stored in the vectors' metadata (best layer)
 *   COEF      a number (negative steers away from the trait)
 *   POSITIONS all (default) | prompt | response
 *   MODE      add (default) | ablate
 * Parsed from the right so a SOURCE may itself contain ':' (Windows drive letters).
 */
import { PersonaError } from "../../errors.js";
import type { Positions } from "../../engine/steering.js";
import type { SteeringRef } from "../../vectors/steer.js";

export const STEER_SYNTAX = "SOURCE:LAYER:COEF[:all|prompt|response[:add|ablate]] (e.g. evil.safetensors:20:1.5, evil::4:response)";

const POSITIONS = new Set(["all", "prompt", "response"]);
const MODES = new Set(["add", "ablate"]);

export function parseSteeringRef(arg: string): SteeringRef {
  const bad = (why: string) => new PersonaError("E_BAD_STEER_ARG", `bad --steer "${arg}": ${why}; expected ${STEER_SYNTAX}`);
  const parts = arg.split(":");
  let mode: "add" | "ablate" = "add";
  let positions: Positions = "all";
  if (parts.length >= 5 && MODES.has(parts[parts.length - 1]!)) mode = parts.pop() as "add" | "ablate";
  if (parts.length >= 4 && POSITIONS.has(parts[parts.length - 1]!)) positions = parts.pop() as Positions;
  if (parts.length < 3) throw bad("too few fields");
  const coefText = parts.pop()!;
  const layerText = parts.pop()!;
  const source = parts.join(":");
  if (!source) throw bad("missing vectors file or trait name");
  const coef = Number(coefText);
  if (coefText.trim() === "" || !Number.isFinite(coef)) throw bad(`coefficient "${coefText}" is not a number`);
  let layer: number | undefined;
  if (layerText !== "") {
    layer = Number(layerText);
    if (!Number.isInteger(layer) || layer < 0) throw bad(`layer "${layerText}" is not a non-negative integer`);
  }
  return { source, layer, coef, positions, mode };
}

/** commander's repeatable-option collector. */
export function collectSteer(arg: string, previous: SteeringRef[] = []): SteeringRef[] {
  return [...previous, parseSteeringRef(arg)];
}
