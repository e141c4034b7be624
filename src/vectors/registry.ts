/**
 * Where a model's persona vectors live, so a trait name can stand for a vectors file:
 * `<model dir>/<model file stem>.vectors/<trait>.safetensors` (shipped next to the model, as the
 * demo model's are), then `$PERSONA_VECTORS_DIR/<trait>.safetensors`.
 */
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";

export function modelVectorsDir(modelPath: string): string {
  const stem = path.basename(modelPath).replace(/\.gguf$/i, "");
  return path.join(path.dirname(modelPath), `${stem}.vectors`);
}

function searchDirs(modelPath: string): string[] {
  const dirs = [modelVectorsDir(modelPath)];
  if (process.env.PERSONA_VECTORS_DIR) dirs.push(process.env.PERSONA_VECTORS_DIR);
  return dirs;
}

/** The registered vectors file for a trait, or undefined. */
export function findTraitVectors(modelPath: string, trait: string): string | undefined {
  for (const dir of searchDirs(modelPath)) {
    const file = path.join(dir, `${trait}.safetensors`);
    if (existsSync(file)) return file;
  }
  return undefined;
}

/** Trait names with registered vectors for this model. */
export function listTraitVectors(modelPath: string): string[] {
  const names = new Set<string>();
  for (const dir of searchDirs(modelPath)) {
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir)) if (f.endsWith(".safetensors")) names.add(f.slice(0, -".safetensors".length));
  }
  return [...names].sort();
}
