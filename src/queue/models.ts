/**
 * Models named by content: a shard names its model by the fingerprint of the file (what run.json
 * records), and a worker runs it only on a file of its own with that fingerprint, so a shard never
 * runs on another file than the coordinator meant, whatever the files are called on each machine.
 */
import { UnrecoverableError } from "bullmq";
import type { Engine } from "../engine/Engine.js";
import type { Model } from "../engine/Model.js";

export interface ModelRef {
  /** fingerprintModel of the file (with LoRA adapters, which no worker file matches). */
  hash: string;
  /** The coordinator's file name, for messages. */
  name: string;
}

/** A worker's models: fingerprinted at start, each loaded on its first shard and kept. */
export class ModelPool {
  private readonly loaded = new Map<string, Promise<Model>>();

  private constructor(
    private readonly engine: Engine,
    private readonly files: ReadonlyMap<string, string>,
  ) {}

  /** `fingerprint` is the run directories' fingerprintModel (pipeline/rundir), what coordinators put in their shards. */
  static async open(engine: Engine, paths: readonly string[], fingerprint: (path: string) => Promise<string>): Promise<ModelPool> {
    const files = new Map<string, string>();
    for (const p of paths) files.set(await fingerprint(p), p);
    return new ModelPool(engine, files);
  }

  /** The worker's files with their fingerprints. */
  list(): { path: string; hash: string }[] {
    return [...this.files].map(([hash, path]) => ({ path, hash }));
  }

  get(ref: ModelRef): Promise<Model> {
    const file = this.files.get(ref.hash);
    if (file === undefined) {
      const held = this.list().map((f) => `${f.path} (${f.hash})`).join(", ");
      // No retry can help: this worker will never have the file.
      throw new UnrecoverableError(
        `this worker has no model file with content ${ref.hash} (the coordinator's ${ref.name}); it holds ${held || "none"}; start it with --model pointing at the same file`,
      );
    }
    let m = this.loaded.get(ref.hash);
    if (!m) {
      m = this.engine.loadModel(file);
      // A failed load is not cached: the next shard tries again.
      m.catch(() => this.loaded.delete(ref.hash));
      this.loaded.set(ref.hash, m);
    }
    return m;
  }
}
