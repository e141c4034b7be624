import type { Target } from "../target.js";
import { ggufTarget } from "./gguf.js";

/** Every fuzz target, in the order `npm run fuzz` runs them. */
export const TARGETS: Target<any>[] = [ggufTarget];
