/**
 * One root error class with a machine-readable code. The CLI maps codes to exit messages, the
 * server maps them to HTTP statuses (see `httpStatusOf`), scripts can switch on `code`.
 */
export type PersonaErrorCode =
  | "E_BAD_INPUT" // a user-supplied value failed validation
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
  | "E_JUDGE" // a judge call failed after retries
  | "E_CONFIG_MISMATCH" // a run directory holds results from another configuration
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
  E_JUDGE: 502,
  E_CONFIG_MISMATCH: 409,
  E_INTERNAL: 500,
};

export function httpStatusOf(code: PersonaErrorCode): number {
  return HTTP_STATUS[code];
}

/** Rebuilds a PersonaError that crossed a worker boundary as a plain object. */
export function reviveError(e: { name?: string; code?: string; message: string }): Error {
  if (e.code && e.code in HTTP_STATUS) return new PersonaError(e.code as PersonaErrorCode, e.message);
  return new Error(e.message);
}
