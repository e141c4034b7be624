/**
 * The decode loop (continuous batching) against the batch API on the same work: `callers`
 * concurrent callers, each with one request, as a server sees them. Through `model.generate`
 * each call is one run and the calls take turns; through `model.openLoop` every request joins
 * the one running loop. Also the loop with all requests handed over at once against one batched
 * `generate` call (the loop's own overhead), and with per-token projections of one probe
 * streamed with every token.
 */
import { Engine } from "../src/engine/Engine.js";

export interface LoopCaseTimes {
  /** `callers` concurrent model.generate calls of one request each. */
  separateCalls: number;
  /** The same requests submitted concurrently to one loop. */
  loop: number;
  /** All requests in one model.generate call. */
  oneCall: number;
  /** The loop, each request also streaming one probe's per-token projection. */
  loopProbe: number;
}

export async function benchLoopCase(opts: {
  modelPath: string;
  threads: number;
  callers: number;
  tokens: number;
  prompt: string;
  timeIt: (fn: () => Promise<void>) => Promise<number>;
}): Promise<LoopCaseTimes> {
  const { callers, tokens } = opts;
  await using engine = await Engine.create({ gpu: "cpu", threads: opts.threads });
  const model = await engine.loadModel(opts.modelPath);
  const prompt = await model.tokenize(opts.prompt);
  const sampling = { temperature: 0, maxTokens: tokens, minTokens: tokens };
  const check = (n: number) => {
    if (n !== tokens) throw new Error("a sequence did not generate the full token count");
  };
  await using loop = await model.openLoop({ slots: callers, ctxPerSlot: prompt.length + tokens });
  const probes = model.probes([{ layer: Math.floor(model.info.nLayer / 2), vector: Float32Array.from({ length: model.info.nEmbd }, (_, i) => Math.cos(i)) }], {
    perToken: true,
  });
  const each = (fn: () => Promise<number>) => Promise.all(Array.from({ length: callers }, async () => check(await fn())));
  return {
    separateCalls: await opts.timeIt(async () => void (await each(async () => (await model.generate([{ prompt }], sampling))[0]!.tokens.length))),
    loop: await opts.timeIt(async () => void (await each(async () => (await loop.submit({ prompt, ...sampling }).result).tokens.length))),
    oneCall: await opts.timeIt(async () => {
      for (const r of await model.generate(Array.from({ length: callers }, () => ({ prompt })), { ...sampling, parallel: callers })) check(r.tokens.length);
    }),
    loopProbe: await opts.timeIt(async () => {
      await each(async () => {
        let streamed = 0;
        for await (const e of loop.submit({ prompt, ...sampling, probes })) if (e.type === "token" && e.projections) streamed++;
        return streamed;
      });
    }),
  };
}
