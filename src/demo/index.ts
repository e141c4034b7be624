/** `persona-vectors/demo`: the demo world (its model, rubric judge and datasets), apart from the core API. */
import "./register.js";
export { DemoJudge } from "./judge.js";
export { DEMO_MODEL_PATH } from "./model.js";
export { writeDemoDatasets, type DemoDatasetOptions, type DemoDatasetFile } from "./datasets.js";
