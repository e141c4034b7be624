/**
 * Engine worker entry: owns koffi, llama.cpp and every native pointer. One decode step runs at a
 * time; requests for one model queue up, and long runs yield between steps so decode loops and
 * other models' requests go on in between.
 */
import { parentPort, workerData } from "node:worker_threads";
import { serializeError } from "../../errors.js";
import type { JobResult } from "../batching.js";
import { EngineCore } from "./core.js";
import { claimLogs, releaseLogs } from "../ffi/llama.js";
import type { RequestMessage, ResponseMessage, WorkerData, WorkerEvent } from "./protocol.js";

const port = parentPort!;
const { options } = workerData as WorkerData;

function post(msg: ResponseMessage, transfer: ArrayBuffer[] = []): void {
  port.postMessage(msg, transfer);
}

/**
 * Decode-loop messages posted while one step (or one message handler) runs leave together, as one
 * array, when it ends: a step streams a token per request, and one message per step instead of one
 * per token saves both threads the per-message cost (a server at 8 streams received 8 a step).
 * Only the loop's: a long synchronous run (training) must send its progress as it goes.
 */
let outbox: ResponseMessage[] = [];
let outboxTransfer: ArrayBuffer[] = [];

function flushLoop(): void {
  if (outbox.length === 0) return;
  const msgs = outbox;
  const transfer = outboxTransfer;
  outbox = [];
  outboxTransfer = [];
  port.postMessage(msgs.length === 1 ? msgs[0] : msgs, transfer);
}

function postLoop(msg: ResponseMessage, transfer: ArrayBuffer[] = []): void {
  if (outbox.length === 0) queueMicrotask(flushLoop);
  outbox.push(msg);
  for (const t of transfer) outboxTransfer.push(t);
}

function buffersOf(r: JobResult): ArrayBuffer[] {
  const out: ArrayBuffer[] = [r.tokens.buffer as ArrayBuffer];
  if (r.activations) {
    out.push(r.activations.promptAvg.buffer as ArrayBuffer, r.activations.promptLast.buffer as ArrayBuffer);
    out.push(r.activations.responseAvg.buffer as ArrayBuffer);
  }
  if (r.projections) {
    const p = r.projections;
    out.push(p.promptLast.buffer as ArrayBuffer, p.promptAvg.buffer as ArrayBuffer, p.responseAvg.buffer as ArrayBuffer);
    if (p.perToken) out.push(p.perToken.buffer as ArrayBuffer);
  }
  if (r.continuationLogprobs) out.push(r.continuationLogprobs.buffer as ArrayBuffer);
  if (r.tokenLogprobs) out.push(r.tokenLogprobs.buffer as ArrayBuffer);
  return out;
}

let core: EngineCore;
let initError: unknown;
try {
  core = new EngineCore(options, (text) => post({ id: 0, kind: "log", text }));
} catch (e) {
  initError = e;
}

async function handle(msg: RequestMessage): Promise<unknown> {
  if (initError) throw initError;
  claimLogs();
  switch (msg.op) {
    case "loadModel":
      return core.loadModel(msg.path, msg);
    case "freeModel":
      return core.freeModel(msg.modelId);
    case "tokenize":
      return core.tokenize(msg.modelId, msg.text, msg.addSpecial, msg.parseSpecial);
    case "detokenize":
      return core.detokenize(msg.modelId, msg.tokens, msg.renderSpecial);
    case "builtinTemplate":
      return core.applyBuiltinTemplate(msg.modelId, msg.messages, msg.addAssistant);
    case "scoreTree":
      return core.scoreTree(msg.modelId, msg.prompt, msg.paths);
    case "systemInfo":
      return {
        variant: core.libraries.variant,
        binsDir: core.libraries.binsDir,
        cpuBackend: core.libraries.cpuBackend,
        hooks: core.hooks,
        hooksNote: core.hooksNote,
        hookCalls: { ...core.evalStats },
        system: core.api.llama_print_system_info(),
      };
    case "run": {
      const abort = new Int32Array(msg.abort);
      await core.run(
        { modelId: msg.modelId, jobs: msg.jobs, shape: msg.shape, sharePrefixes: msg.sharePrefixes },
        {
          onResult: (result) => post({ id: msg.id, kind: "event", event: { type: "result", result } }, buffersOf(result)),
          onToken: msg.streamTokens
            ? (index, token) => {
                const piece = core.model(msg.modelId).tokenBytes(token, false);
                post({ id: msg.id, kind: "event", event: { type: "token", index, token, piece } });
              }
            : undefined,
          shouldAbort: () => Atomics.load(abort, 0) !== 0,
        },
      );
      return null;
    }
    case "runTotals":
      return core.runTotals(msg.modelId);
    case "train": {
      const abort = new Int32Array(msg.abort);
      return core.train(msg.modelId, msg.spec, {
        onProgress: (progress) => post({ id: msg.id, kind: "event", event: { type: "trainProgress", progress } }),
        shouldAbort: () => Atomics.load(abort, 0) !== 0,
      });
    }
    case "saveModel":
      return core.save(msg.modelId, msg.path);
  }
}

/**
 * Decode-loop messages are handled at once, not queued: a loop steps between other work, and a
 * request streams until its result (or error) answers its message.
 */
function handleLoop(msg: RequestMessage): boolean {
  const reply = (fn: () => unknown) => {
    try {
      if (initError) throw initError;
      const value = fn() ?? null;
      // What the loop posted before (results, cancellations' errors) must not be overtaken.
      flushLoop();
      post({ id: msg.id, kind: "ok", value });
    } catch (e) {
      flushLoop();
      post({ id: msg.id, kind: "error", error: serializeError(e) });
    }
  };
  switch (msg.op) {
    case "loopOpen":
      reply(() => core.openLoop(msg.modelId, msg.shape));
      return true;
    case "loopCancel":
      reply(() => core.cancelInLoop(msg.loopId, msg.key));
      return true;
    case "loopStats":
      reply(() => core.loopStats(msg.loopId));
      return true;
    case "loopClose":
      reply(() => core.closeLoop(msg.loopId));
      return true;
    case "loopSubmit": {
      const event = (e: WorkerEvent, transfer: ArrayBuffer[] = []) => postLoop({ id: msg.id, kind: "event", event: e }, transfer);
      const fail = (e: unknown) => postLoop({ id: msg.id, kind: "error", error: serializeError(e) });
      try {
        if (initError) throw initError;
        const model = core.model(core.loopModel(msg.loopId));
        const { text } = msg;
        const job = text ? { ...msg.job, prompt: model.tokenize(text.text, text.addSpecial, text.parseSpecial) } : msg.job;
        core.submitToLoop(msg.loopId, msg.key, job, {
          onPrompt: (nPromptTokens, reusedTokens, projections) => event({ type: "prompt", nPromptTokens, reusedTokens, projections }),
          onToken: (t) => event({ type: "token", index: msg.key, piece: model.tokenBytes(t.token, false), ...t }),
          onResult: (result) => postLoop({ id: msg.id, kind: "ok", value: result }, buffersOf(result)),
          onError: fail,
        });
        if (text) event({ type: "accepted", nPromptTokens: job.prompt.length });
      } catch (e) {
        fail(e);
      }
      return true;
    }
    default:
      return false;
  }
}

/**
 * One FIFO queue per model (promise chains; engine-wide requests share queue 0): a model's requests
 * run in order, while another model's (a judge loaded beside the generator) go on between the
 * decode steps of a long run instead of waiting for it.
 */
const queues = new Map<number, Promise<void>>();
port.on("message", (msg: RequestMessage | { op: "dispose" }) => {
  if (msg.op !== "dispose" && handleLoop(msg)) return;
  if (msg.op === "dispose") {
    void Promise.all(queues.values()).then(() => {
      core?.dispose();
      releaseLogs();
      flushLoop();
      port.close();
    });
    return;
  }
  const m = msg as RequestMessage;
  const key = "modelId" in m ? m.modelId : 0;
  const next = (queues.get(key) ?? Promise.resolve()).then(async () => {
    try {
      const value = await handle(m);
      const transfer = value instanceof Int32Array ? [value.buffer as ArrayBuffer] : [];
      post({ id: m.id, kind: "ok", value }, transfer);
    } catch (e) {
      post({ id: m.id, kind: "error", error: serializeError(e) });
    }
  });
  queues.set(key, next);
  void next.then(() => {
    if (queues.get(key) === next) queues.delete(key);
  });
});
