import { PersonaError } from "../errors.js";
import { type Limit, limiter } from "./limit.js";

/**
 * The one HTTP path every API judge and chat LLM goes through: a concurrency limit, retries with
 * exponential backoff and jitter on 429/5xx/network errors (honouring Retry-After), a per-request
 * timeout and caller cancellation.
 */
export interface HttpClientOptions {
  /** Most requests in flight at once through this client. Defaults to 8. */
  maxConcurrency?: number;
  /** Retries after the first attempt. Defaults to 5. */
  maxRetries?: number;
  /** Per-attempt timeout in milliseconds. Defaults to 60000. */
  timeoutMs?: number;
  /** First backoff delay in milliseconds; doubles per retry, full jitter. Defaults to 500. */
  baseDelayMs?: number;
  /** Longest wait between attempts, Retry-After included. Defaults to 60000. */
  maxDelayMs?: number;
}

/** Statuses worth another try: rate limits, server errors, Anthropic's 529 "overloaded". */
const RETRYABLE_STATUS = new Set([408, 409, 425, 429, 500, 502, 503, 504, 529]);

/** Failure of one attempt; `retryable` decides whether the loop goes on. */
class AttemptError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

export class HttpClient {
  private readonly limit: Limit;
  private readonly maxRetries: number;
  private readonly timeoutMs: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;

  constructor(opts: HttpClientOptions = {}) {
    const maxConcurrency = opts.maxConcurrency ?? 8;
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1) {
      throw new PersonaError("E_BAD_INPUT", `maxConcurrency must be a positive integer, got ${maxConcurrency}`);
    }
    this.limit = limiter(maxConcurrency);
    this.maxRetries = opts.maxRetries ?? 5;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.baseDelayMs = opts.baseDelayMs ?? 500;
    this.maxDelayMs = opts.maxDelayMs ?? 60_000;
  }

  /**
   * POSTs `body` as JSON and returns the parsed JSON reply. Throws `PersonaError("E_JUDGE")` once
   * retries are spent or on a non-retryable status, `PersonaError("E_ABORTED")` when `signal` fires.
   */
  async postJson(url: string, body: unknown, headers: Record<string, string>, signal?: AbortSignal): Promise<unknown> {
    const payload = JSON.stringify(body);
    let last: AttemptError | undefined;
    for (let attempt = 0; attempt <= this.maxRetries; attempt++) {
      throwIfAborted(signal);
      if (last) await sleep(this.delayFor(attempt, last.retryAfterMs), signal);
      try {
        return await this.limit(() => this.attempt(url, payload, headers, signal));
      } catch (e) {
        if (!(e instanceof AttemptError)) throw e;
        if (!e.retryable) throw new PersonaError("E_JUDGE", `POST ${url} failed: ${e.message}`, { cause: e });
        last = e;
      }
    }
    throw new PersonaError(
      "E_JUDGE",
      `POST ${url} failed after ${this.maxRetries + 1} attempt(s); last error: ${last?.message ?? "unknown"}`,
      { cause: last },
    );
  }

  private delayFor(attempt: number, retryAfterMs: number | undefined): number {
    if (retryAfterMs !== undefined) return Math.min(retryAfterMs, this.maxDelayMs);
    const ceiling = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1));
    // Full jitter: many clients hitting one rate limit spread out instead of retrying in lockstep.
    return Math.random() * ceiling;
  }

  private async attempt(url: string, payload: string, headers: Record<string, string>, signal?: AbortSignal): Promise<unknown> {
    throwIfAborted(signal);
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    let res: Response;
    let text: string;
    try {
      res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: payload,
        signal: combined,
      });
      text = await res.text();
    } catch (e) {
      throwIfAborted(signal);
      if (timeout.aborted) throw new AttemptError(`timed out after ${this.timeoutMs} ms`, true);
      throw new AttemptError(`network error: ${describe(e)}`, true);
    }
    if (!res.ok) {
      const retryable = RETRYABLE_STATUS.has(res.status);
      throw new AttemptError(`HTTP ${res.status}: ${snippet(text)}`, retryable, parseRetryAfter(res.headers.get("retry-after")));
    }
    try {
      return JSON.parse(text) as unknown;
    } catch {
      // A 200 with a broken body is usually a proxy cutting the stream: worth another try.
      throw new AttemptError(`reply is not JSON: ${snippet(text)}`, true);
    }
  }
}

/** Retry-After as delta-seconds or an HTTP date, in milliseconds; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new PersonaError("E_ABORTED", "request cancelled", { cause: signal.reason });
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(new PersonaError("E_ABORTED", "request cancelled", { cause: signal?.reason }));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  // undici hides the real reason (ECONNREFUSED, …) in `cause`.
  const cause = e.cause instanceof Error ? `: ${e.cause.message}` : "";
  return `${e.message}${cause}`;
}

function snippet(text: string): string {
  const oneLine = text.replace(/\s+/g, " ").trim();
  return oneLine.length > 300 ? `${oneLine.slice(0, 300)}…` : oneLine || "(empty body)";
}
