/**
 * One root error class with a machine-readable code. The CLI maps codes to exit messages, the
 * server maps them to HTTP statuses (see `httpStatusOf`), scripts can switch on `code`.
 */
export type PersonaErrorCode =
  | "E_BAD_INPUT" // a user-supplied value failed validation
  | "E_USAGE" // a command line that does not parse: unknown flag, missing or malformed value
  | "E_IO" // a file or directory could not be read or written
  | "E_BAD_STEER_ARG" // a --steer flag or steering object is malformed
  | "E_NOT_FOUND" // a file, model, trait or tensor does not exist
  | "E_BAD_MODEL" // a model file is corrupt, truncated or unsupported
  | "E_BAD_FORMAT" // a vectors/trait/data file is malformed
  | "E_SHAPE" // a vector's width or a layer index does not fit the model
  | "E_NATIVE" // llama.cpp returned an error code
  | "E_NO_LIBRARY" // the llama.cpp binaries could not be found or loaded
  | "E_DISPOSED" // an object was used after dispose()
  | "E_ENGINE_CRASHED" // the engine worker died
  | "E_ABORTED" // the caller cancelled
  | "E_TOO_LONG" // a request needs more context than its decode loop's slots hold
  | "E_JUDGE" // a judge call failed after retries
  | "E_CONFIG_MISMATCH" // a run directory holds results from another configuration
  | "E_NETWORK" // a download failed or a server could not be reached
  | "E_AUTH" // a server refused access (token missing or not allowed, gated repo)
  | "E_QUEUE" // the job queue (Redis) cannot be reached, or a shard failed on every worker that tried it
  | "E_INTERNAL";

export class PersonaError extends Error {
  readonly code: PersonaErrorCode;

  constructor(code: PersonaErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PersonaError";
    this.code = code;
  }
}

const HTTP_STATUS: Record<PersonaErrorCode, number> = {
  E_BAD_INPUT: 400,
  E_USAGE: 400,
  E_IO: 500,
  E_BAD_STEER_ARG: 400,
  E_NOT_FOUND: 404,
  E_BAD_MODEL: 422,
  E_BAD_FORMAT: 422,
  E_SHAPE: 400,
  E_NATIVE: 500,
  E_NO_LIBRARY: 500,
  E_DISPOSED: 500,
  E_ENGINE_CRASHED: 503,
  E_ABORTED: 499,
  E_TOO_LONG: 400,
  E_JUDGE: 502,
  E_CONFIG_MISMATCH: 409,
  E_NETWORK: 502,
  E_AUTH: 401,
  E_QUEUE: 503,
  E_INTERNAL: 500,
};

export function httpStatusOf(code: PersonaErrorCode): number {
  return HTTP_STATUS[code];
}

/**
 * An error as plain data, to cross a worker boundary: structured cloning keeps neither the class
 * nor `code`, so the worker sends this and the host revives it with its stack and causes.
 */
export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  /** A PersonaErrorCode, or a Node system error's code ("ENOENT"). */
  code?: string;
  /** Node system errors: the path and call that failed. */
  path?: string;
  syscall?: string;
  cause?: SerializedError;
}

export function serializeError(e: unknown, depth = 0): SerializedError {
  if (!(e instanceof Error)) return { name: "Error", message: String(e) };
  const { code, path, syscall } = e as NodeJS.ErrnoException;
  const out: SerializedError = { name: e.name, message: e.message };
  if (e.stack !== undefined) out.stack = e.stack;
  if (typeof code === "string") out.code = code;
  if (typeof path === "string") out.path = path;
  if (typeof syscall === "string") out.syscall = syscall;
  // Bounded: a cause chain can be circular.
  if (e.cause !== undefined && depth < 8) out.cause = serializeError(e.cause, depth + 1);
  return out;
}

/** Rebuilds an error that crossed a worker boundary: a PersonaError where the code is one of ours. */
export function reviveError(e: SerializedError): Error {
  const options = e.cause ? { cause: reviveError(e.cause) } : undefined;
  let err: Error;
  if (e.code !== undefined && e.code in HTTP_STATUS) {
    err = new PersonaError(e.code as PersonaErrorCode, e.message, options);
  } else {
    err = new Error(e.message, options);
    err.name = e.name;
    // A system error keeps what identifies it (ENOENT and the path), so callers can still tell.
    for (const k of ["code", "path", "syscall"] as const) if (e[k] !== undefined) Object.assign(err, { [k]: e[k] });
  }
  // The worker's stack says where the failure happened; the host's would only show the message loop.
  if (e.stack !== undefined) err.stack = e.stack;
  return err;
}

/**
 * A file-system error (ENOENT, EACCES, EISDIR, ...) as a one-line PersonaError naming the path;
 * undefined for anything else.
 */
export function fileSystemError(e: unknown): PersonaError | undefined {
  const err = e as NodeJS.ErrnoException;
  if (!(err instanceof Error) || typeof err.code !== "string" || typeof err.path !== "string") return undefined;
  const reason = /^[A-Z]+: ([^,]+)/.exec(err.message)?.[1] ?? err.code;
  const what = err.syscall ? `cannot ${err.syscall} ${err.path}` : err.path;
  return new PersonaError(err.code === "ENOENT" ? "E_NOT_FOUND" : "E_IO", `${what}: ${reason}`, { cause: e });
}
