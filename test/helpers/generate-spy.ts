import type { Model } from "../../src/engine/Model.js";

/**
 * Watches `model.generate` (the real engine still runs every call) until `restore()`: how many
 * requests it was given, which is what a resumed run generates again, and the index within its
 * call of each reply as it arrives.
 */
export function spyGenerate(model: Model): { readonly requests: number; readonly results: readonly number[]; restore(): void } {
  const generate = model.generate.bind(model);
  let requests = 0;
  const results: number[] = [];
  model.generate = (reqs, opts = {}) => {
    requests += reqs.length;
    return generate(reqs, {
      ...opts,
      onResult: (r) => {
        results.push(r.index);
        opts.onResult?.(r);
      },
    });
  };
  return {
    get requests() {
      return requests;
    },
    results,
    restore: () => {
      delete (model as { generate?: unknown }).generate;
    },
  };
}
