/**
 * Main-thread side of the engine worker: numbered calls, streamed events, cancellation through a
 * shared flag the worker polls between decode steps, and crash containment (a dead worker rejects
 * every pending call with E_ENGINE_CRASHED instead of taking the process down).
 */
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { PersonaError, reviveError } from "../../errors.js";
import type { CoreOptions } from "./core.js";
import type { Request, ResponseMessage, WorkerData, WorkerEvent } from "./protocol.js";

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  onEvent?: (e: WorkerEvent) => void;
}

const here = fileURLToPath(import.meta.url);
// Run from src/ (tsx, .ts) or dist/ (.js): the worker entry has the same extension as this file.
const WORKER_ENTRY = path.join(path.dirname(here), `main${path.extname(here)}`);

export class WorkerHost {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private dead: Error | undefined;
  private closing = false;

  constructor(options: CoreOptions, onLog: (text: string) => void) {
    const data: WorkerData = { options };
    this.worker = WORKER_ENTRY.endsWith(".ts")
      ? // Run from sources (tests, tsx): Node 20 does not apply --import loaders to a worker's entry.
        new Worker(
          `import(${JSON.stringify(import.meta.resolve("tsx/esm/api"))})` +
            `.then((m) => { m.register(); return import(${JSON.stringify(pathToFileURL(WORKER_ENTRY).href)}); })`,
          { eval: true, workerData: data },
        )
      : new Worker(WORKER_ENTRY, { workerData: data });
    const dispatch = (msg: ResponseMessage) => {
      if (msg.kind === "log") return onLog(msg.text);
      const p = this.pending.get(msg.id);
      if (!p) return;
      if (msg.kind === "event") return p.onEvent?.(msg.event);
      this.pending.delete(msg.id);
      if (msg.kind === "ok") p.resolve(msg.value);
      else p.reject(reviveError(msg.error));
    };
    // The worker sends what one decode-loop step posted (a token per request) as one array.
    this.worker.on("message", (msg: ResponseMessage | ResponseMessage[]) => {
      if (!Array.isArray(msg)) return dispatch(msg);
      for (const m of msg) dispatch(m);
    });
    const fail = (err: Error) => {
      this.dead ??= err;
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
    };
    this.worker.on("error", (e) => fail(new PersonaError("E_ENGINE_CRASHED", `engine worker failed: ${e.message}`)));
    this.worker.on("exit", (code) => {
      if (!this.closing) fail(new PersonaError("E_ENGINE_CRASHED", `engine worker exited with code ${code}`));
    });
  }

  call<T>(req: Request, onEvent?: (e: WorkerEvent) => void, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.closing) return Promise.reject(new PersonaError("E_DISPOSED", "engine disposed"));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, onEvent });
      this.worker.postMessage({ id, ...req }, transfer);
    });
  }

  /** Lets queued work finish, frees native memory, stops the thread. Idempotent. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.dead) return;
    const exited = new Promise<void>((resolve) => this.worker.once("exit", () => resolve()));
    this.worker.postMessage({ op: "dispose" });
    await exited;
  }
}
