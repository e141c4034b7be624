/**
 * Plugs the demo world into the core's registries: `--model demo`, its built-in traits, `--judge
 * demo` (and so `local:demo`), and models/ as shipped, read-only vectors. The core never imports
 * demo/; the CLI entry and `persona-vectors/demo` import this module once for its effect.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { PersonaError } from "../errors.js";
import { registerModelName } from "../hub/resolve.js";
import { registerJudge } from "../judge/resolve.js";
import { registerBuiltinTraits } from "../traits/registry.js";
import { registerShippedVectorsRoot } from "../vectors/registry.js";
import { DEMO_MODEL_PATH } from "./model.js";
import { demoTraitDir } from "./traits.js";

registerModelName("demo", () => {
  if (!existsSync(DEMO_MODEL_PATH)) throw new PersonaError("E_NOT_FOUND", `the demo model is missing at ${DEMO_MODEL_PATH}; rebuild it with npm run demo:train`);
  return DEMO_MODEL_PATH;
});
registerShippedVectorsRoot(path.dirname(DEMO_MODEL_PATH));
registerBuiltinTraits(demoTraitDir());
// Imported on use: the rubric judge pulls in the demo corpus, which other commands never need.
registerJudge("demo", async () => new (await import("./judge.js")).DemoJudge());
