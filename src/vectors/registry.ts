/**
 * Where a model's persona vectors live, so a trait name can stand for a vectors file. Searched in
 * this order, the first hit wins:
 *   user     `<user data dir>/vectors/<model file stem>/<trait>.safetensors` (what `extract
 *            --register` and `sweep` write; see datadir.ts)
 *   shipped  `<model dir>/<model file stem>.vectors/<trait>.safetensors` (next to the model, as
 *            the demo model's are)
 *   env      `$PERSONA_VECTORS_DIR/<trait>.safetensors`
 * Only the user directory is ever written: shipped files are read-only for the tool, and a user
 * file with the same trait name shadows them.
 */
import { existsSync, readdirSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { userDataDir } from "../datadir.js";
import { writeFileAtomic } from "../store/atomic.js";

export type VectorsOrigin = "user" | "shipped" | "env";

export interface RegisteredVectors {
  trait: string;
  path: string;
  origin: VectorsOrigin;
  /** True when a file earlier in the search order has the same trait name. */
  shadowed: boolean;
}

const EXT = ".safetensors";

function modelStem(modelPath: string): string {
  return path.basename(modelPath).replace(/\.gguf$/i, "");
}

export function modelVectorsDir(modelPath: string): string {
  return path.join(path.dirname(modelPath), `${modelStem(modelPath)}.vectors`);
}

/** Where registrations for this model are written. */
export function userVectorsDir(modelPath: string): string {
  return path.join(userDataDir(), "vectors", modelStem(modelPath));
}

function searchDirs(modelPath: string): { dir: string; origin: VectorsOrigin }[] {
  const dirs: { dir: string; origin: VectorsOrigin }[] = [
    { dir: userVectorsDir(modelPath), origin: "user" },
    { dir: modelVectorsDir(modelPath), origin: "shipped" },
  ];
  if (process.env.PERSONA_VECTORS_DIR) dirs.push({ dir: process.env.PERSONA_VECTORS_DIR, origin: "env" });
  return dirs;
}

/** The vectors file a trait name stands for with this model, or undefined. */
export function findTraitVectors(modelPath: string, trait: string): RegisteredVectors | undefined {
  for (const { dir, origin } of searchDirs(modelPath)) {
    const file = path.join(dir, `${trait}${EXT}`);
    if (existsSync(file)) return { trait, path: file, origin, shadowed: false };
  }
  return undefined;
}

/** Every registered vectors file for this model, in search order, shadowed ones marked. */
export function listTraitVectors(modelPath: string): RegisteredVectors[] {
  const seen = new Set<string>();
  const out: RegisteredVectors[] = [];
  for (const { dir, origin } of searchDirs(modelPath)) {
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).filter((f) => f.endsWith(EXT)).sort()) {
      const trait = f.slice(0, -EXT.length);
      out.push({ trait, path: path.join(dir, f), origin, shadowed: seen.has(trait) });
      seen.add(trait);
    }
  }
  return out;
}

/** Model file stems that have a user registration directory. */
export function usersRegisteredModels(): string[] {
  const root = path.join(userDataDir(), "vectors");
  return existsSync(root) ? readdirSync(root).sort() : [];
}

function inside(file: string, dir: string): boolean {
  const rel = path.relative(path.resolve(dir), path.resolve(file));
  return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel);
}

/** Directories of files shipped with the package (the demo world registers models/); never rewritten. */
const shippedRoots = new Set<string>();

export function registerShippedVectorsRoot(dir: string): void {
  shippedRoots.add(path.resolve(dir));
}

/**
 * Whether the tool may rewrite this vectors file: not when it ships with the package (models/),
 * sits next to a model, or comes from PERSONA_VECTORS_DIR; a file of the user's own is theirs.
 */
export function isReadOnlyVectors(file: string, modelPath: string): boolean {
  if ([...shippedRoots].some((dir) => inside(file, dir))) return true;
  if (inside(file, userVectorsDir(modelPath))) return false;
  return searchDirs(modelPath).some(({ dir }) => inside(file, dir)) || path.basename(path.dirname(path.resolve(file))).endsWith(".vectors");
}

/** The path of the user's registration of `trait` for this model, its directory created. */
export async function userVectorsFile(modelPath: string, trait: string): Promise<string> {
  const dir = userVectorsDir(modelPath);
  await mkdir(dir, { recursive: true });
  return path.join(dir, `${trait}${EXT}`);
}

/** Writes `bytes` as the user's registration of `trait` for this model; returns its path. */
export async function registerVectors(modelPath: string, trait: string, bytes: Uint8Array): Promise<string> {
  const file = await userVectorsFile(modelPath, trait);
  await writeFileAtomic(file, bytes);
  return file;
}
