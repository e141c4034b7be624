import { InvalidArgumentError } from "commander";
import type { LoraAdapter } from "../../engine/lora.js";

/**
 * `--lora FILE[:SCALE]` (repeatable): a GGUF LoRA adapter and its scale (default 1). Parsed from
 * the right, so a FILE may contain ':' when a scale is given.
 */
export function collectLora(arg: string, previous: LoraAdapter[] = []): LoraAdapter[] {
  const colon = arg.lastIndexOf(":");
  const tail = colon >= 0 ? arg.slice(colon + 1) : "";
  const isScale = colon > 0 && tail.trim() !== "" && Number.isFinite(Number(tail));
  const path = isScale ? arg.slice(0, colon) : arg;
  if (path === "") throw new InvalidArgumentError(`expected FILE[:SCALE], e.g. adapter.gguf:0.8`);
  return [...previous, { path, scale: isScale ? Number(tail) : 1 }];
}
