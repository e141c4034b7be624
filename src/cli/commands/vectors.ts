import { type Command, Option } from "commander";
import { PersonaError } from "../../errors.js";
import {
  type PersonaVectors,
  TENSOR_NAMES,
  type VectorTensorName,
  isTensorName,
  parseVectorRef,
  presentTensors,
  readVectors,
  defaultTensor,
  selectTensor,
  spanEntries,
  vectorsShape,
  writeVectors,
} from "../../vectors/format.js";
import { exportControlVector } from "../../vectors/interop/cvec.js";
import { ptToVectors } from "../../vectors/interop/torch.js";
import { loadVectorsFile, mergeVectors } from "../../vectors/load.js";
import { cosinePerLayer, layerNorms } from "../../vectors/math.js";
import { listTraitVectors, userVectorsDir } from "../../vectors/registry.js";
import { userDataDir } from "../../datadir.js";
import { resolveModelPath } from "../engine.js";
import { print, table } from "../output.js";
import { floatArg, intArg } from "../args/numbers.js";
import { checkOutputFile } from "../args/paths.js";

/** `persona vectors list|info|import|export|compare`: find, inspect and convert persona vector files. */
export function register(program: Command): void {
  const vectors = program
    .command("vectors")
    .description("list, inspect, import, export and compare persona vector files (.safetensors; reference .pt files are read too)");

  vectors
    .command("list")
    .description("the trait names that stand for vectors files with a model (as in --steer TRAIT::COEF), and where each comes from")
    .option("-m, --model <path>", "GGUF model file, or `demo`", "demo")
    .option("--json", "print stable JSON")
    .addHelpText(
      "after",
      `
A trait name resolves to the first of: your registrations (user: what \`extract --register\` and
\`sweep\` write, in $PERSONA_DATA_DIR, else $XDG_DATA_HOME/persona-vectors, else
~/.local/share/persona-vectors), the files shipped next to the model (shipped: MODEL.vectors/,
never modified by the tool), then $PERSONA_VECTORS_DIR (env). Delete your file to fall back
to the shipped one.

Examples:
  persona vectors list
  persona vectors list --model qwen2.5-7b-instruct-q4_k_m.gguf --json
`,
    )
    .action(async (opts: { model: string; json?: boolean }) => {
      // Listing never downloads: an hf: model must already be in the cache.
      const modelPath = await resolveModelPath(opts.model, { offline: true });
      const entries = await Promise.all(
        listTraitVectors(modelPath).map(async (r) => ({ ...r, best_layer: await readVectors(r.path).then((v) => v.meta.bestLayer ?? null, () => null) })),
      );
      if (opts.json) {
        print(JSON.stringify({ model: modelPath, data_dir: userDataDir(), user_dir: userVectorsDir(modelPath), vectors: entries }, null, 2));
        return;
      }
      const lines = [`model:    ${modelPath}`, `user dir: ${userVectorsDir(modelPath)}`, ""];
      if (entries.length === 0) lines.push("no registered vectors (persona extract --register adds some)");
      else {
        const rows = [["trait", "origin", "best layer", "file"], ...entries.map((e) => [e.trait, e.origin + (e.shadowed ? " (shadowed)" : ""), e.best_layer === null ? "-" : String(e.best_layer), e.path])];
        const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
        lines.push(...rows.map((r) => r.map((c, i) => (i < 3 ? c.padEnd(widths[i]!) : c)).join("  ")));
      }
      print(lines.join("\n"));
    });

  vectors
    .command("info")
    .description("show a vectors file's tensors, metadata and per-layer norms")
    .argument("<file>", "vectors .safetensors file (or a reference .pt file)")
    .option("--json", "print stable JSON instead of tables")
    .addHelpText("after", "\nExamples:\n  persona vectors info evil.safetensors\n  persona vectors info evil_response_avg_diff.pt --json\n")
    .action(async (file: string, opts: { json?: boolean }) => {
      const v = await loadVectorsFile(file);
      const names = presentTensors(v);
      const norms = Object.fromEntries(names.map((n) => [n, layerNorms(v.tensors[n]!)]));
      const { nLayerPlus1, nEmbd } = vectorsShape(v);
      const spans = spanEntries(v);
      if (opts.json) {
        print(JSON.stringify({ file, shape: [nLayerPlus1, nEmbd], tensors: names, spans: Object.fromEntries(spans.map(([n, sp]) => [`${n}_span`, sp.k])), meta: v.meta, norms }, null, 2));
        return;
      }
      const m = v.meta;
      const lines = [
        `file:     ${file}`,
        `trait:    ${m.trait}`,
        `source:   ${m.source}`,
        `tensors:  ${names.join(", ")}  [${nLayerPlus1}, ${nEmbd}] float32 (layers 0..${nLayerPlus1 - 1}, 0 = embeddings)`,
        ...spans.map(([n, sp]) => `span:     ${n}_span  [${nLayerPlus1}, ${sp.k}, ${nEmbd}]: ${sp.k} orthonormal directions per layer (CAFT: --steer FILE#${n}_span:A-B:1:all:ablate)`),
      ];
      if (m.model) {
        const extra = [m.model.arch && `arch ${m.model.arch}`, `n_layer ${m.model.nLayer}`, `n_embd ${m.model.nEmbd}`, m.model.fileHash];
        lines.push(`model:    ${m.model.name} (${extra.filter(Boolean).join(", ")})`);
      }
      if (m.counts) lines.push(`samples:  ${m.counts.kept} kept, ${m.counts.dropped} dropped`);
      if (m.judge !== undefined) lines.push(`judge:    ${m.judge}`);
      if (m.thresholds) lines.push(`filter:   trait ≥ ${m.thresholds.trait}, coherence ≥ ${m.thresholds.coherence}`);
      if (m.bestLayer !== undefined) lines.push(`best layer: ${m.bestLayer}`);
      if (m.monitorLayer) lines.push(`monitor layer: ${m.monitorLayer.layer} (${m.monitorLayer.tensor}, r ${m.monitorLayer.pearsonR.toFixed(3)})`);
      if (m.createdAt !== undefined) lines.push(`created:  ${m.createdAt}`);
      if (m.toolVersion !== undefined) lines.push(`tool:     ${m.toolVersion}`);
      for (const [k, val] of Object.entries(m.extra ?? {})) lines.push(`${k}: ${val}`);
      lines.push("", "per-layer L2 norms:");
      const rows = Array.from({ length: nLayerPlus1 }, (_, l) => [String(l), ...names.map((n) => norms[n]![l]!.toFixed(4))]);
      lines.push(table(["layer", ...names], rows, "right"));
      print(lines.join("\n"));
    });

  vectors
    .command("import")
    .description("make one vectors .safetensors file from other tools' files: reference .pt files, llama.cpp/repeng control-vector GGUFs, bare safetensors")
    .argument("<files...>", "one or more files: .pt ([n_layer+1, n_embd] tensor or dict), .gguf control vector (direction.N → layer N+1), .safetensors with or without our metadata")
    .option("--out <file>", "output .safetensors path (defaults to the first input with .safetensors; required when that is a .safetensors)")
    .option("--trait <name>", "trait name (defaults to the files' own, else the file name's prefix, e.g. evil_response_avg_diff.pt → evil)")
    .option("--tensor <name>", `reduction a bare tensor or control vector holds: ${TENSOR_NAMES.join(", ")} (defaults to its name, else response_avg)`)
    .option("--n-layer <n>", "the model's n_layer: size of the result for control vectors and [n_embd] vectors (defaults to the highest layer they steer)", intArg(1))
    .option("--layer <L>", "our layer of a bare [n_embd] vector", intArg(1))
    .option("--model-name <name>", "model name to record")
    .option("--arch <arch>", "model architecture to record, e.g. qwen3")
    .option("--no-siblings", "with one .pt file: do not pick up <trait>_prompt_avg_diff.pt / <trait>_prompt_last_diff.pt beside it")
    .option("--force", "overwrite the output file if it exists")
    .addHelpText(
      "after",
      [
        "",
        "Examples:",
        "  persona vectors import persona_vectors/Qwen3-4B/evil_response_avg_diff.pt --out evil.safetensors",
        "  persona vectors import evil_prompt_last_diff.pt evil_prompt_avg_diff.pt --no-siblings --out evil.safetensors",
        "  persona vectors import happy.gguf --n-layer 28 --trait happy --out happy.safetensors   # repeng / llama.cpp control vector",
        "  persona vectors import steer.safetensors --trait calm --layer 14 --n-layer 28 --out calm.safetensors   # a bare [n_embd] vector",
        "",
      ].join("\n"),
    )
    .action(
      async (
        files: string[],
        opts: { out?: string; trait?: string; tensor?: string; nLayer?: number; layer?: number; modelName?: string; arch?: string; siblings: boolean; force?: boolean },
      ) => {
        const first = files[0]!;
        if (opts.out === undefined && /\.safetensors$/i.test(first)) throw new PersonaError("E_BAD_INPUT", "--out is required when the input is a .safetensors file");
        const out = opts.out ?? first.replace(/\.(pt|gguf)$/i, "") + ".safetensors";
        if (opts.tensor !== undefined && !isTensorName(opts.tensor)) {
          throw new PersonaError("E_BAD_INPUT", `unknown tensor "${opts.tensor}"; expected one of ${TENSOR_NAMES.join(", ")}`);
        }
        await checkOutputFile(out, "--out", opts.force);
        const foreign = { trait: opts.trait, tensor: opts.tensor as VectorTensorName | undefined, nLayer: opts.nLayer, layer: opts.layer };
        const parts: { path: string; vectors: PersonaVectors }[] = [];
        for (const file of files) {
          const vectors = /\.pt$/i.test(file) ? await ptToVectors(file, { trait: opts.trait, siblings: opts.siblings && files.length === 1 }) : await loadVectorsFile(file, foreign);
          parts.push({ path: file, vectors });
        }
        const v = mergeVectors(parts, opts.trait);
        const { nLayerPlus1, nEmbd } = vectorsShape(v);
        if (opts.modelName !== undefined || opts.arch !== undefined || v.meta.model === undefined) {
          v.meta.model = { ...v.meta.model, name: opts.modelName ?? v.meta.model?.name ?? "unknown", nLayer: nLayerPlus1 - 1, nEmbd };
          if (opts.arch !== undefined) v.meta.model.arch = opts.arch;
        }
        await writeVectors(out, v);
        print(`wrote ${out}: trait "${v.meta.trait}", tensors ${presentTensors(v).join(", ")} [${nLayerPlus1}, ${nEmbd}]`);
      },
    );

  vectors
    .command("export")
    .description("export one or more layers of a vectors file as a llama.cpp control vector GGUF")
    .argument("<file>", "vectors file, optionally FILE#TENSOR")
    .option("--tensor <name>", `tensor to export: ${TENSOR_NAMES.join(", ")} (defaults to response_avg)`)
    .addOption(new Option("--format <format>", "output format").choices(["gguf-cvec"]).default("gguf-cvec"))
    .requiredOption("--layer <L>", "layer(s) to export, e.g. 20 or 16,20 or best (the file's best_layer); layer L becomes direction.(L-1)")
    .option("--coef <c>", "multiply the vector by this coefficient", floatArg(), 1)
    .option("--model-hint <arch>", "controlvector.model_hint (defaults to the file's model arch)")
    .requiredOption("--out <file>", "output .gguf path")
    .option("--force", "overwrite the output file if it exists")
    .addHelpText(
      "after",
      "\nExamples:\n  persona vectors export evil.safetensors --layer 20 --coef 1.5 --out evil-L20.gguf\n  persona vectors export evil.safetensors#prompt_last --layer best --out evil.gguf\n  llama-cli -m model.gguf --control-vector evil-L20.gguf   # use it in llama.cpp\n",
    )
    .action(async (file: string, opts: { tensor?: string; layer: string; coef: number; modelHint?: string; out: string; force?: boolean }) => {
      const ref = resolveTensorArg(file, opts.tensor);
      const v = await loadVectorsFile(ref.path);
      const tensor = ref.tensor ?? defaultTensor(v);
      const layers = parseLayers(opts.layer, v);
      await checkOutputFile(opts.out, "--out", opts.force);
      await exportControlVector(opts.out, v, { layers, tensor, coef: opts.coef, modelHint: opts.modelHint });
      print(`wrote ${opts.out}: ${tensor} × ${opts.coef}, layer${layers.length > 1 ? "s" : ""} ${layers.join(", ")} → ${layers.map((l) => `direction.${l - 1}`).join(", ")}`);
    });

  vectors
    .command("compare")
    .description("cosine similarity of two vectors files, layer by layer")
    .argument("<a>", "first vectors file (FILE[#TENSOR], or .pt)")
    .argument("<b>", "second vectors file (FILE[#TENSOR], or .pt)")
    .option("--tensor <name>", `tensor to compare in both files (defaults to response_avg)`)
    .option("--json", "print stable JSON instead of a table")
    .addHelpText("after", "\nExamples:\n  persona vectors compare ours/evil.safetensors evil_response_avg_diff.pt\n  persona vectors compare a.safetensors b.safetensors --tensor prompt_last --json\n")
    .action(async (a: string, b: string, opts: { tensor?: string; json?: boolean }) => {
      const ra = resolveTensorArg(a, opts.tensor);
      const rb = resolveTensorArg(b, opts.tensor);
      const va = await loadVectorsFile(ra.path);
      const vb = await loadVectorsFile(rb.path);
      ra.tensor ??= defaultTensor(va);
      rb.tensor ??= defaultTensor(vb);
      const ma = selectTensor(va, ra.tensor);
      const mb = selectTensor(vb, rb.tensor);
      if (ma.nLayerPlus1 !== mb.nLayerPlus1 || ma.nEmbd !== mb.nEmbd) {
        throw new PersonaError("E_SHAPE", `cannot compare: ${a} is [${ma.nLayerPlus1}, ${ma.nEmbd}] but ${b} is [${mb.nLayerPlus1}, ${mb.nEmbd}]`);
      }
      const cos = cosinePerLayer(ma, mb);
      const na = layerNorms(ma);
      const nb = layerNorms(mb);
      if (opts.json) {
        // NaN (a zero row, e.g. layer 0 of some files) becomes null in JSON.
        print(JSON.stringify({ a: ra, b: rb, shape: [ma.nLayerPlus1, ma.nEmbd], cosine: cos, normA: na, normB: nb }, null, 2));
        return;
      }
      const rows = cos.map((c, l) => [String(l), fmt(c), na[l]!.toFixed(4), nb[l]!.toFixed(4)]);
      print(`A = ${a} (${ra.tensor})\nB = ${b} (${rb.tensor})\n\n${table(["layer", "cosine", "‖A‖", "‖B‖"], rows, "right")}`);
    });
}

/** `FILE#TENSOR` and `--tensor` name the same thing; both given and different is an error. */
function resolveTensorArg(ref: string, flag: string | undefined): { path: string; tensor?: VectorTensorName } {
  const parsed = parseVectorRef(ref);
  if (flag === undefined) return parsed;
  if (!isTensorName(flag)) throw new PersonaError("E_BAD_INPUT", `unknown tensor "${flag}"; expected one of ${TENSOR_NAMES.join(", ")}`);
  if (parsed.tensor !== undefined && parsed.tensor !== flag) {
    throw new PersonaError("E_BAD_INPUT", `"${ref}" selects ${parsed.tensor} but --tensor says ${flag}`);
  }
  return { path: parsed.path, tensor: flag };
}

function parseLayers(arg: string, v: PersonaVectors): number[] {
  if (arg === "best") {
    if (v.meta.bestLayer === undefined) throw new PersonaError("E_BAD_INPUT", "--layer best: the file has no best_layer (run a steering sweep first, or give a number)");
    return [v.meta.bestLayer];
  }
  return arg.split(",").map((s) => {
    if (!/^\s*\d+\s*$/.test(s)) throw new PersonaError("E_BAD_INPUT", `--layer: "${s}" is not a layer number (expected e.g. 20, 16,20 or best)`);
    return Number(s);
  });
}



function fmt(x: number): string {
  return Number.isNaN(x) ? "n/a" : x.toFixed(4);
}
