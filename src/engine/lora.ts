/**
 * LoRA adapters for inference: checked in TypeScript against the base model before llama.cpp
 * loads them (its loader throws on some mismatches, but a wrong shape that slips through reaches
 * ggml asserts, which abort the process).
 */
import { PersonaError } from "../errors.js";
import { type GgufFile, getString, readGguf } from "./gguf/reader.js";
import { GgmlType, GgufValueType, ggmlTypeName } from "./gguf/types.js";

export interface LoraAdapter {
  /** GGUF LoRA file (`persona convert lora` writes one from a PEFT adapter). */
  path: string;
  /** Multiplies the adapter's B·A (on top of its alpha/r). Defaults to 1. */
  scale?: number;
}

const LORA_TYPES: ReadonlySet<number> = new Set([GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0]);

/** Checks each `(A, B)` pair: the base weight exists and is `[n_in, n_out]` for A `[n_in, r]` and B `[r, n_out]`. */
export function validateLoraShapes(pairs: readonly { name: string; aNe: readonly number[]; bNe: readonly number[] }[], base: GgufFile, label: string): void {
  for (const p of pairs) {
    const w = base.tensorsByName.get(p.name);
    if (!w) throw new PersonaError("E_SHAPE", `${label}: adapts ${p.name}, which the base model does not have (wrong base model?)`);
    if (p.name === "token_embd.weight") throw new PersonaError("E_BAD_MODEL", `${label}: LoRA on token_embd is not supported`);
    const [nIn, r] = p.aNe;
    const [rB, nOut] = p.bNe;
    if (p.aNe.length !== 2 || p.bNe.length !== 2 || r !== rB || r! < 1) {
      throw new PersonaError("E_SHAPE", `${label}: ${p.name}: lora_a [${p.aNe.join(", ")}] and lora_b [${p.bNe.join(", ")}] do not form B·A`);
    }
    if (w.ne.length !== 2 || w.ne[0] !== nIn || w.ne[1] !== nOut) {
      throw new PersonaError("E_SHAPE", `${label}: ${p.name} is [${w.ne.join(", ")}] in the base model but the adapter maps ${nIn} → ${nOut} (wrong base model?)`);
    }
  }
}

/** Reads a GGUF LoRA's header and checks it against the base model's before llama.cpp loads it. */
export async function checkLoraFile(path: string, base: GgufFile): Promise<void> {
  const g = await readGguf(path, { maxArrayItems: 0 });
  const bad = (why: string): PersonaError => new PersonaError("E_BAD_MODEL", `${path}: not a LoRA adapter for this model: ${why}`);
  if (getString(g, "general.type") !== "adapter" || getString(g, "adapter.type") !== "lora") {
    throw bad(`general.type is ${getString(g, "general.type") ?? "unset"}, adapter.type ${getString(g, "adapter.type") ?? "unset"} (expected adapter / lora; convert a PEFT adapter with persona convert lora)`);
  }
  // llama-adapter.cpp reads it with gguf_get_val_f32, which asserts the type (found by npm run fuzz).
  const alpha = g.kv.get("adapter.lora.alpha");
  if (alpha && alpha.type !== GgufValueType.FLOAT32) throw bad("adapter.lora.alpha is not a float32");
  const arch = getString(g, "general.architecture");
  const baseArch = getString(base, "general.architecture");
  if (arch !== baseArch) throw bad(`its architecture is ${arch}, the model's ${baseArch}`);
  const pairs = new Map<string, { aNe?: number[]; bNe?: number[] }>();
  for (const t of g.tensors) {
    const m = /^(.+)\.lora_([ab])$/.exec(t.name);
    if (!m) {
      if (t.name.endsWith("_norm.weight")) continue; // llama.cpp skips these too
      throw bad(`tensor ${t.name} is neither <weight>.lora_a nor <weight>.lora_b`);
    }
    if (!LORA_TYPES.has(t.type)) throw bad(`tensor ${t.name} is ${ggmlTypeName(t.type)} (F32, F16, BF16 or Q8_0 expected)`);
    const p = pairs.get(m[1]!) ?? {};
    p[m[2] === "a" ? "aNe" : "bNe"] = t.ne;
    pairs.set(m[1]!, p);
  }
  if (pairs.size === 0) throw bad("it has no LoRA tensors");
  const list = [...pairs].map(([name, p]) => {
    if (!p.aNe || !p.bNe) throw bad(`${name} has only lora_${p.aNe ? "a" : "b"}`);
    return { name, aNe: p.aNe, bNe: p.bNe };
  });
  validateLoraShapes(list, base, path);
}
