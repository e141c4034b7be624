import { Rng, hashSeed } from "../../src/demo/corpus/rng.js";

/** The PRNG of case `index`: a pure function of (target, seed, index), so any case can be rebuilt alone. */
export function caseRng(target: string, seed: number, index: number): Rng {
  return new Rng(hashSeed(`${target}/${seed}/${index}`));
}
