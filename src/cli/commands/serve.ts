import type { Command } from "commander";
import type { LoraAdapter } from "../../engine/lora.js";
import type { GpuChoice } from "../../engine/ffi/discover.js";
import { loadServerConfig } from "../../server/config.js";
import { startServer } from "../../server/server.js";
import { listArg } from "../args/lists.js";
import { intArg } from "../args/numbers.js";
import { type EngineFlags, resolveModelPath, withEngineFlags } from "../engine.js";
import { note, print } from "../output.js";

interface ServeFlags {
  model: string;
  offline?: boolean;
  lora?: LoraAdapter[];
  threads?: number;
  gpu?: GpuChoice;
  traits?: string[];
  config?: string;
  host?: string;
  port?: number;
  apiKey?: string;
  parallel?: number;
  ctx?: number;
  queue?: number;
}

/** `persona serve`: the OpenAI-compatible server with persona monitoring and steering. */
export function register(program: Command): void {
  withEngineFlags(
    program
      .command("serve")
      .description("serve a model over an OpenAI-compatible HTTP API with per-request persona monitoring and steering, and a live dashboard at /")
      .option("--traits <list>", "traits to serve, comma-separated (default: every trait registered for the model)", listArg)
      .option("--config <file>", "JSON config: traits, monitor, layers, thresholds, action, steer, limits… (flags win over it)")
      .option("--host <host>", "address to bind (default 127.0.0.1; any other needs --api-key)")
      .option("--port <n>", "port (default 8080; 0 picks a free one)", intArg(0, 65535))
      .option("--api-key <key>", "require Authorization: Bearer KEY on the API (also PERSONA_API_KEY)")
      .option("--parallel <n>", "sequences decoded together (default 4)", intArg(1, 256))
      .option("--ctx <n>", "context per sequence, prompt plus reply tokens (default 2048)", intArg(16))
      .option("--queue <n>", "requests that may wait for a free sequence before 429 (default 64)", intArg(0)),
    { model: "demo" },
  )
    .addHelpText(
      "after",
      `
Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health,
GET /metrics (Prometheus), and the dashboard at /. A request may carry a "persona" field:
  {"monitor": ["evil"], "steer": [{"trait": "evil", "coef": -4, "mode": "add"}],
   "thresholds": {"evil": 2.5}, "action": "refuse", "trace": true}
and every reply carries persona.<trait>.{prompt_projection, response_projection, flagged}.
SIGTERM (or Ctrl-C) lets in-flight requests finish, then exits 0. Without --threads (or
PERSONA_THREADS) decoding takes the free cores less one, leaving one to the HTTP thread.

Examples:
  persona serve --model demo
  persona serve --model demo --port 9000 --traits evil,sycophantic --config serve.json
  persona serve --model model.gguf --host 0.0.0.0 --api-key "$KEY" --parallel 8 --ctx 4096
  curl -s localhost:8080/v1/chat/completions -d '{"messages":[{"role":"user","content":"Hi"}],"persona":{"monitor":["evil"]}}'
`,
    )
    .action(async function (this: Command, opts: ServeFlags) {
      const globals = this.optsWithGlobals() as EngineFlags;
      const config = await loadServerConfig(opts.config, {
        // The built-in default model gives way to the config file's.
        model: this.getOptionValueSource("model") === "default" ? undefined : opts.model,
        traits: opts.traits,
        host: opts.host,
        port: opts.port,
        apiKey: opts.apiKey ?? process.env.PERSONA_API_KEY,
        parallel: opts.parallel,
        ctx: opts.ctx,
        queue: opts.queue,
        threads: opts.threads,
      });
      const modelPath = await resolveModelPath(config.model, opts);
      const server = await startServer(config, { modelPath, gpu: opts.gpu, verbose: globals.verbose ?? false, loras: opts.lora });
      const { state } = server;
      note(`serving ${state.modelId} (traits: ${[...state.persona.traits.keys()].join(", ") || "none"}) on ${server.url}, dashboard at ${server.url}/`);
      print(server.url);
      const signal = await new Promise<NodeJS.Signals>((resolve) => {
        process.once("SIGTERM", () => resolve("SIGTERM"));
        process.once("SIGINT", () => resolve("SIGINT"));
      });
      note(`${signal}: finishing ${state.active} in-flight request(s), then stopping`);
      await server.close();
      note("stopped");
    });
}
