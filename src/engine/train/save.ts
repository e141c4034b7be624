/**
 * Writes what training produced: a loaded model's current weights as a GGUF (saveModel), or a
 * trained adapter as a GGUF LoRA (saveLora).
 *
 * saveModel: llama_model_save_to_file writes the tensors
 * but not all the metadata (no chat template, no general.file_type), so the result is the source
 * file's header with every tensor's bytes replaced by the saved ones: byte-for-byte the original
 * model except for the weights.
 */
import { randomBytes } from "node:crypto";
import { copyFile, open, rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { PersonaError } from "../../errors.js";
import { readGguf } from "../gguf/reader.js";
import { GgmlType } from "../gguf/types.js";
import { GgufWriter } from "../gguf/writer.js";
import type { TrainedLora } from "./options.js";
import type { NativeModel } from "../native/NativeModel.js";

/** Architectures whose saver GGML_ASSERTs (llama_model_saver_supports_arch in this llama.cpp). */
const SAVER_UNSUPPORTED = new Set([
  "plamo3", "gemma3", "gemma3n", "cohere2", "cohere2moe", "olmo2", "bitnet", "t5", "exaone-moe", "afmoe",
  "apertus", "mimo2", "step35", "muse-glimmer", "mellum", "laguna", "granite_swa", "dots3note",
]);

const COPY_CHUNK = 1 << 24;

export async function saveModel(model: NativeModel, target: string): Promise<void> {
  const { info } = model;
  if (typeof target !== "string" || target === "") throw new PersonaError("E_BAD_INPUT", "save path must be a non-empty string");
  if (SAVER_UNSUPPORTED.has(info.architecture)) {
    throw new PersonaError("E_BAD_MODEL", `llama.cpp cannot save ${info.architecture} models`);
  }
  const dir = path.dirname(path.resolve(target));
  const dirStat = await stat(dir).catch(() => undefined);
  if (!dirStat?.isDirectory()) throw new PersonaError("E_NOT_FOUND", `folder ${dir} does not exist`);

  const tag = `${process.pid}-${randomBytes(4).toString("hex")}`;
  const raw = path.join(dir, `.${path.basename(target)}.${tag}.weights`);
  const out = path.join(dir, `.${path.basename(target)}.${tag}.tmp`);
  try {
    model.api.llama_model_save_to_file(model.handle, raw);
    const rawStat = await stat(raw).catch(() => undefined);
    if (!rawStat || rawStat.size === 0) throw new PersonaError("E_NATIVE", `llama.cpp could not write ${raw}${model.lastErrors()}`);
    const source = await readGguf(info.path, { maxArrayItems: 0 });
    const saved = await readGguf(raw, { maxArrayItems: 0 });
    for (const t of source.tensors) {
      const s = saved.tensorsByName.get(t.name);
      if (!s || s.type !== t.type || s.nBytes !== t.nBytes || s.ne.join() !== t.ne.join()) {
        throw new PersonaError("E_BAD_MODEL", `the saved weights do not match ${info.path} at tensor ${t.name}; was the file changed?`);
      }
    }
    await copyFile(info.path, out);
    const src = await open(raw, "r");
    const dst = await open(out, "r+");
    try {
      const buf = Buffer.alloc(COPY_CHUNK);
      for (const t of source.tensors) {
        const s = saved.tensorsByName.get(t.name)!;
        for (let done = 0; done < t.nBytes; ) {
          const n = Math.min(COPY_CHUNK, t.nBytes - done);
          const { bytesRead } = await src.read(buf, 0, n, saved.dataOffset + s.offset + done);
          if (bytesRead !== n) throw new PersonaError("E_NATIVE", `short read from ${raw}`);
          await dst.write(buf, 0, n, source.dataOffset + t.offset + done);
          done += n;
        }
      }
      await dst.sync();
    } finally {
      await src.close();
      await dst.close();
    }
    await rename(out, target);
  } finally {
    await unlink(raw).catch(() => undefined);
    await unlink(out).catch(() => undefined);
  }
}

/**
 * Writes a trained adapter as a llama.cpp GGUF LoRA (atomically). llama.cpp scales B·A by
 * adapter.lora.alpha / rank, so alpha is written as scale · rank: plain and rsLoRA scaling load alike.
 */
export async function saveLora(target: string, architecture: string, lora: TrainedLora): Promise<void> {
  const w = new GgufWriter();
  w.setString("general.architecture", architecture);
  w.setString("general.type", "adapter");
  w.setString("adapter.type", "lora");
  w.setF32("adapter.lora.alpha", lora.scale * lora.rank);
  for (const t of lora.tensors) {
    w.addTensor(`${t.name}.lora_a`, [t.nIn, lora.rank], t.a, GgmlType.F32);
    w.addTensor(`${t.name}.lora_b`, [lora.rank, t.nOut], t.b, GgmlType.F32);
  }
  await w.write(target);
}
