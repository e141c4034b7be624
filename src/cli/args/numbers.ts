/** commander `coerce` parsers: turn flag text into checked numbers or fail with the flag's rule. */
import { InvalidArgumentError } from "commander";

export function intArg(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (s: string): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(max === Number.MAX_SAFE_INTEGER ? `expected an integer ≥ ${min}` : `expected an integer in ${min}..${max}`);
    }
    return n;
  };
}

export function floatArg(min = -Infinity, max = Infinity) {
  return (s: string): number => {
    const n = Number(s);
    if (s.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected a number${min > -Infinity ? ` ≥ ${min}` : ""}${max < Infinity ? ` and ≤ ${max}` : ""}`);
    }
    return n;
  };
}
