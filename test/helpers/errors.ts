import assert from "node:assert/strict";
import { PersonaError, type PersonaErrorCode } from "../../src/errors.js";

/**
 * The check for `assert.throws` / `assert.rejects`: a PersonaError with this code (and a message
 * matching `pattern`). A mismatch fails with what was thrown instead, not just "validation failed".
 */
export function personaError(code: PersonaErrorCode, pattern?: RegExp): (e: unknown) => true {
  return (e) => {
    assert.ok(e instanceof PersonaError, `expected a PersonaError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}
