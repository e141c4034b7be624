/**
 * `persona convert lora`: a PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`)
 * → llama.cpp's GGUF LoRA (`general.type=adapter`, `adapter.type=lora`, tensors
 * `<gguf weight>.lora_a` ne=[n_in, r] and `.lora_b` ne=[r, n_out]), checked against the base GGUF
 * it will be applied to. llama.cpp scales B·A by alpha/r with r read per tensor, which is PEFT's
 * own scaling also for per-module ranks; where PEFT scales otherwise (rsLoRA: alpha/√r, or a
 * per-module alpha) the exact factor is folded into B and alpha is written as 0 (llama.cpp then
 * applies only the user's scale).
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { PersonaError } from "../errors.js";
import { getNumber, readGguf, requireString } from "../engine/gguf/reader.js";
import { GgmlType } from "../engine/gguf/types.js";
import { GgufWriter } from "../engine/gguf/writer.js";
import { validateLoraShapes } from "../engine/lora.js";
import { type CheckpointTensor, openShards, readTensor } from "./checkpoint.js";
import { type HfArch, ggufTensorName, permuteRows } from "./names.js";

const AdapterConfig = z.object({
  peft_type: z.string().optional(),
  r: z.number().int().positive(),
  lora_alpha: z.number().positive(),
  use_rslora: z.boolean().optional(),
  use_dora: z.boolean().optional(),
  fan_in_fan_out: z.boolean().optional(),
  rank_pattern: z.record(z.string(), z.number()).optional(),
  alpha_pattern: z.record(z.string(), z.number()).optional(),
  base_model_name_or_path: z.string().nullable().optional(),
});
export type AdapterConfig = z.infer<typeof AdapterConfig>;

export interface ConvertLoraOptions {
  onProgress?: (done: number, total: number, tensor: string) => void;
}

export interface ConvertLoraResult {
  arch: string;
  /** Adapted weights, by llama.cpp name, with rank and the scale PEFT gives them. */
  modules: { name: string; rank: number; scale: number }[];
  /** adapter.lora.alpha written (0 when scales are folded into B). */
  alpha: number;
}

/** PEFT's `get_pattern_key`: a pattern applies to a module whose name ends with it at a dot boundary. */
function patternValue(patterns: Record<string, number> | undefined, module: string): number | undefined {
  for (const [p, v] of Object.entries(patterns ?? {})) {
    if (new RegExp(`(^|.*\\.)(${p})$`).test(module)) return v;
  }
  return undefined;
}

/** PEFT's scaling of one module: alpha/r, or alpha/√r with rsLoRA. */
export function peftScale(cfg: AdapterConfig, module: string, rank: number): number {
  const alpha = patternValue(cfg.alpha_pattern, module) ?? cfg.lora_alpha;
  return cfg.use_rslora ? alpha / Math.sqrt(rank) : alpha / rank;
}

export async function readAdapterConfig(dir: string): Promise<AdapterConfig> {
  const file = path.join(dir, "adapter_config.json");
  let data: unknown;
  try {
    data = JSON.parse(await readFile(file, "utf8"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new PersonaError("E_NOT_FOUND", `${dir} has no adapter_config.json: not a PEFT adapter directory`);
    throw new PersonaError("E_BAD_FORMAT", `${file} is not valid JSON`);
  }
  const r = AdapterConfig.safeParse(data);
  if (!r.success) throw new PersonaError("E_BAD_FORMAT", `${file}: ${r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  const cfg = r.data;
  if (cfg.peft_type !== undefined && cfg.peft_type !== "LORA") throw new PersonaError("E_BAD_MODEL", `${file}: peft_type ${cfg.peft_type} is not LORA`);
  if (cfg.use_dora) throw new PersonaError("E_BAD_MODEL", `${file}: DoRA adapters have no llama.cpp form; merge them into the model instead`);
  if (cfg.fan_in_fan_out) throw new PersonaError("E_BAD_MODEL", `${file}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported`);
  return cfg;
}

const LORA_NAME = /^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$/;

export async function convertLora(dir: string, base: string, out: string, opts: ConvertLoraOptions = {}): Promise<ConvertLoraResult> {
  const cfg = await readAdapterConfig(dir);
  const baseFile = await readGguf(base, { maxArrayItems: 0 });
  const arch = requireString(baseFile, "general.architecture");
  if (arch !== "llama" && arch !== "qwen2" && arch !== "qwen3") throw new PersonaError("E_BAD_MODEL", `${base}: base architecture ${arch} is not supported (llama, qwen2, qwen3)`);
  const nHead = getNumber(baseFile, `${arch}.attention.head_count`) ?? 0;
  const heads = { nHead, nHeadKv: getNumber(baseFile, `${arch}.attention.head_count_kv`) ?? nHead };

  const tensors = await openShards(dir, ["adapter_model.safetensors"]);
  const pairs = new Map<string, { a?: CheckpointTensor; b?: CheckpointTensor }>();
  for (const [name, t] of tensors) {
    const m = LORA_NAME.exec(name);
    if (!m) {
      throw new PersonaError("E_BAD_MODEL", `${dir}: tensor ${name} is not a LoRA A/B weight (embedding LoRA, modules_to_save and DoRA magnitudes are not supported)`);
    }
    const p = pairs.get(m[1]!) ?? {};
    p[m[2] === "A" ? "a" : "b"] = t;
    pairs.set(m[1]!, p);
  }
  if (pairs.size === 0) throw new PersonaError("E_BAD_MODEL", `${dir}: the adapter has no LoRA tensors`);

  const modules: ConvertLoraResult["modules"] = [];
  const plan: { name: string; a: Float32Array; b: Float32Array; rank: number; nIn: number; nOut: number; permute?: number; scale: number }[] = [];
  for (const [module, { a, b }] of [...pairs].sort(([x], [y]) => x.localeCompare(y))) {
    if (!a || !b) throw new PersonaError("E_BAD_MODEL", `${dir}: ${module} has lora_${a ? "B" : "A"} missing`);
    if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[0] !== b.shape[1]) {
      throw new PersonaError("E_BAD_MODEL", `${dir}: ${module}: lora_A [${a.shape.join(", ")}] and lora_B [${b.shape.join(", ")}] do not form B·A`);
    }
    const target = ggufTensorName(`${module}.weight`, arch as HfArch, heads);
    if (target === undefined) throw new PersonaError("E_BAD_MODEL", `${dir}: ${module} is not a weight llama.cpp applies LoRA to`);
    const rank = a.shape[0]!;
    const scale = peftScale(cfg, module, rank);
    plan.push({ name: target.name, a: await readTensor(a), b: await readTensor(b), rank, nIn: a.shape[1]!, nOut: b.shape[0]!, scale, ...(target.permuteHeads !== undefined ? { permute: target.permuteHeads } : {}) });
    modules.push({ name: target.name, rank, scale });
  }
  // llama.cpp applies alpha/r per tensor; that is PEFT's scale unless rsLoRA or per-module alphas say otherwise.
  const plain = plan.every((p) => Math.abs(p.scale - cfg.lora_alpha / p.rank) <= 1e-12 * p.scale);
  const alpha = plain ? cfg.lora_alpha : 0;
  validateLoraShapes(
    plan.map((p) => ({ name: p.name, aNe: [p.nIn, p.rank], bNe: [p.rank, p.nOut] })),
    baseFile,
    `${dir} (for ${base})`,
  );

  const w = new GgufWriter();
  w.setString("general.architecture", arch);
  w.setString("general.type", "adapter");
  w.setString("adapter.type", "lora");
  w.setF32("adapter.lora.alpha", alpha);
  if (cfg.base_model_name_or_path) w.setString("general.base_model.0.repo_url", cfg.base_model_name_or_path);
  for (const p of plan) {
    let b = p.permute !== undefined ? permuteRows(p.b, p.nOut, p.rank, p.permute) : p.b;
    if (!plain) b = b.map((x) => x * p.scale);
    w.addTensor(`${p.name}.lora_a`, [p.nIn, p.rank], p.a, GgmlType.F32);
    w.addTensor(`${p.name}.lora_b`, [p.rank, p.nOut], b, GgmlType.F32);
  }
  await w.write(out, opts.onProgress);
  return { arch, modules, alpha };
}
