/**
 * Compile-time checks of the typed native boundary (src/engine/ffi/llama.ts), run by
 * `npm run typecheck`: each `@ts-expect-error` fails the typecheck if the line below it compiles,
 * i.e. if a wrong argument to a native function stopped being a type error. Never executed.
 */
import type { ContextHandle, LlamaApi, ModelHandle, TensorHandle, VocabHandle } from "../../src/engine/ffi/llama.js";

export function wrongArgumentsDoNotCompile(api: LlamaApi, model: ModelHandle, vocab: VocabHandle, ctx: ContextHandle, t: TensorHandle): void {
  api.llama_vocab_n_tokens(vocab);
  // @ts-expect-error a model is not a vocabulary
  api.llama_vocab_n_tokens(model);
  // @ts-expect-error a context is not a model
  api.llama_model_free(ctx);
  // @ts-expect-error token ids are numbers
  api.llama_vocab_is_eog(vocab, "1");
  // @ts-expect-error the output buffer of tensor_get is a Float32Array
  api.ggml_backend_tensor_get(t, new Uint8Array(4), 0, 4);
  // @ts-expect-error llama_decode needs a batch
  api.llama_decode(ctx);
  // @ts-expect-error the result is a number, not a string
  const rc: string = api.llama_decode(ctx, api.llama_batch_init(1, 0, 1));
  void rc;
}
