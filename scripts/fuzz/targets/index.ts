import type { Target } from "../target.js";
import { cliTarget } from "./cli.js";
import { convertTarget } from "./convert.js";
import { datasetTarget } from "./dataset.js";
import { ggufTarget } from "./gguf.js";
import { hubTarget } from "./hub.js";
import { jsonlTarget } from "./jsonl.js";
import { judgeTarget } from "./judge.js";
import { loraTarget } from "./lora.js";
import { monitorTarget } from "./monitor.js";
import { ptTarget } from "./pt.js";
import { serverTarget } from "./server.js";
import { steerTarget } from "./steer.js";
import { templateTarget } from "./template.js";
import { traitTarget } from "./trait.js";
import { traitgenTarget } from "./traitgen.js";
import { vectorsTarget } from "./vectors.js";

/** Every fuzz target, in the order `npm run fuzz` runs them. */
// Each target has its own seed type, used only between its own setup and make.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const TARGETS: Target<any>[] = [ggufTarget, vectorsTarget, ptTarget, traitTarget, jsonlTarget, steerTarget, cliTarget, templateTarget, loraTarget, convertTarget, judgeTarget, hubTarget, datasetTarget, monitorTarget, traitgenTarget, serverTarget];
