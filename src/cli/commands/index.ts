import type { Command } from "commander";
import { register as activations } from "./activations.js";
import { register as chat } from "./chat.js";
import { register as convert } from "./convert.js";
import { register as demo } from "./demo.js";
import { register as evaluate } from "./eval.js";
import { register as extract } from "./extract.js";
import { register as finetune } from "./finetune.js";
import { register as generate } from "./generate.js";
import { register as model } from "./model.js";
import { register as monitor } from "./monitor.js";
import { register as pull } from "./pull.js";
import { register as screen } from "./screen.js";
import { register as serve } from "./serve.js";
import { register as shift } from "./shift.js";
import { register as sweep } from "./sweep.js";
import { register as trait } from "./trait.js";
import { register as vectors } from "./vectors.js";
import { register as worker } from "./worker.js";

/** Each subcommand module exports one `register(program)`; the order here is the order in `--help`. */
export type RegisterCommand = (program: Command) => void;

export const COMMANDS: RegisterCommand[] = [demo, pull, convert, model, generate, chat, serve, activations, trait, extract, evaluate, sweep, monitor, screen, finetune, shift, vectors, worker];
