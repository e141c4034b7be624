import type { SamplerSettings, Sampler } from "../batching.js";
import { PersonaError } from "../../errors.js";
import { isNull, type LlamaApi, type SamplerHandle } from "../ffi/llama.js";
import type { NativeContext } from "./NativeContext.js";

/**
 * A llama.cpp sampler chain for one sequence (top-k → top-p → min-p → temperature → seeded
 * draw, llama.cpp's usual order), so each sequence has its own random stream.
 */
export class NativeSampler implements Sampler {
  private readonly chain: SamplerHandle;
  private freed = false;

  constructor(
    private readonly api: LlamaApi,
    private readonly ctx: NativeContext,
    settings: SamplerSettings,
  ) {
    this.chain = api.llama_sampler_chain_init(api.llama_sampler_chain_default_params());
    const add = (s: SamplerHandle | null) => {
      if (isNull(s)) throw new PersonaError("E_NATIVE", "llama.cpp returned a null sampler");
      api.llama_sampler_chain_add(this.chain, s);
    };
    if (settings.temperature <= 0) {
      add(api.llama_sampler_init_greedy());
      return;
    }
    if (settings.topK > 0) add(api.llama_sampler_init_top_k(settings.topK));
    if (settings.topP < 1) add(api.llama_sampler_init_top_p(settings.topP, 1));
    if (settings.minP > 0) add(api.llama_sampler_init_min_p(settings.minP, 1));
    add(api.llama_sampler_init_temp(settings.temperature));
    add(api.llama_sampler_init_dist(settings.seed >>> 0));
  }

  sample(batchIndex: number, suppress: Int32Array | null): number {
    if (suppress) {
      const logits = this.ctx.logits(batchIndex);
      for (const t of suppress) logits[t] = -Infinity;
    }
    return this.api.llama_sampler_sample(this.chain, this.ctx.handle, batchIndex);
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.api.llama_sampler_free(this.chain);
  }
}
