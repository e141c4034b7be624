/**
 * The decode loop (continuous batching) against the batch API on the same work: `callers`
 * concurrent callers, each with one request, as a server sees them. Through `model.generate`
 * each call is one run and the calls take turns; through `model.openLoop` every request joins
 * the one running loop. Also the loop with all requests handed over at once against one batched
 * `generate` call, on a fresh loop (the loop's own overhead) and on a loop whose slots hold the
 * prompt from the previous repeat (prefix reuse), and with per-token projections of one probe
 * streamed with every token. Wall clock and process CPU time, since a busy machine moves the first.
 */
import { Engine } from "../src/engine/Engine.js";

/** Seconds for one case: wall clock, and CPU time of the whole process (all threads), which a busy machine disturbs less. */
export interface CaseTime {
  wall: number;
  cpu: number;
}

export interface LoopCaseTimes {
  /** `callers` concurrent model.generate calls of one request each. */
  separateCalls: CaseTime;
  /** The same requests submitted concurrently to one loop (a prefix cached in a slot is reused). */
  loop: CaseTime;
  /** The same, on a loop opened for each repeat: nothing cached to reuse. */
  freshLoop: CaseTime;
  /** All requests in one model.generate call. */
  oneCall: CaseTime;
  /** The loop, each request also streaming one probe's per-token projection. */
  loopProbe: CaseTime;
}

/** Median over `repeats` runs after a warm-up. */
async function timeCase(repeats: number, fn: () => Promise<void>): Promise<CaseTime> {
  await fn();
  const runs: CaseTime[] = [];
  for (let i = 0; i < repeats; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await fn();
    const c = process.cpuUsage(c0);
    runs.push({ wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 });
  }
  const mid = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  return { wall: mid(runs.map((r) => r.wall)), cpu: mid(runs.map((r) => r.cpu)) };
}

export async function benchLoopCase(opts: {
  modelPath: string;
  threads: number;
  callers: number;
  tokens: number;
  prompt: string;
  repeats: number;
}): Promise<LoopCaseTimes> {
  const { callers, tokens, repeats } = opts;
  await using engine = await Engine.create({ gpu: "cpu", threads: opts.threads });
  const model = await engine.loadModel(opts.modelPath);
  const prompt = await model.tokenize(opts.prompt);
  const sampling = { temperature: 0, maxTokens: tokens, minTokens: tokens };
  const check = (n: number) => {
    if (n !== tokens) throw new Error("a sequence did not generate the full token count");
  };
  const shape = { slots: callers, ctxPerSlot: prompt.length + tokens };
  await using loop = await model.openLoop(shape);
  const probes = model.probes([{ layer: Math.floor(model.info.nLayer / 2), vector: Float32Array.from({ length: model.info.nEmbd }, (_, i) => Math.cos(i)) }], {
    perToken: true,
  });
  const each = (fn: () => Promise<number>) => Promise.all(Array.from({ length: callers }, async () => check(await fn())));
  return {
    separateCalls: await timeCase(repeats, async () => void (await each(async () => (await model.generate([{ prompt }], sampling))[0]!.tokens.length))),
    loop: await timeCase(repeats, async () => void (await each(async () => (await loop.submit({ prompt, ...sampling }).result).tokens.length))),
    freshLoop: await timeCase(repeats, async () => {
      await using fresh = await model.openLoop(shape);
      await each(async () => (await fresh.submit({ prompt, ...sampling }).result).tokens.length);
    }),
    oneCall: await timeCase(repeats, async () => {
      for (const r of await model.generate(Array.from({ length: callers }, () => ({ prompt })), { ...sampling, parallel: callers })) check(r.tokens.length);
    }),
    loopProbe: await timeCase(repeats, async () => {
      await each(async () => {
        let streamed = 0;
        for await (const e of loop.submit({ prompt, ...sampling, probes })) if (e.type === "token" && e.projections) streamed++;
        return streamed;
      });
    }),
  };
}
