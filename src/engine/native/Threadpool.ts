/**
 * A persistent CPU threadpool for one context. Without one, ggml creates and joins a fresh pool
 * for every graph (every decode) with polling level 50; a pool of our own lives as long as the
 * context and lets us choose how long its idle workers spin before they sleep.
 */
import {
  GGML_BACKEND_DEVICE_TYPE_CPU,
  callThreadpoolFree,
  callThreadpoolNew,
  isNull,
  type LlamaApi,
  type ProcHandle,
  type ThreadpoolHandle,
} from "../ffi/llama.js";

export class Threadpool {
  private constructor(
    private readonly handle: ThreadpoolHandle,
    private readonly freeFn: ProcHandle,
  ) {}

  /** A pool of `threads` workers polling at `poll` (0..100), or undefined where the CPU backend has none to offer. */
  static create(api: LlamaApi, threads: number, poll: number): Threadpool | undefined {
    const cpu = api.ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (isNull(cpu)) return undefined;
    const reg = api.ggml_backend_dev_backend_reg(cpu);
    const newFn = api.ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new");
    const freeFn = api.ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free");
    if (isNull(newFn) || isNull(freeFn)) return undefined;
    const params = api.ggml_threadpool_params_default(threads);
    params.poll = poll;
    const handle = callThreadpoolNew(newFn, params);
    return isNull(handle) ? undefined : new Threadpool(handle, freeFn);
  }

  get native(): ThreadpoolHandle {
    return this.handle;
  }

  /** Only after every context using it is freed or detached. */
  free(): void {
    callThreadpoolFree(this.freeFn, this.handle);
  }
}
