/**
 * A real redis-server for the queue tests and benchmark: on a free loopback port, in a temporary
 * directory, without persistence (so a restart loses every key, the hardest case for a run).
 * `startRedis` gives undefined when the server is not installed (the tests then skip, saying so).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";

export const HAS_REDIS = spawnSync("redis-server", ["--version"], { stdio: "ignore" }).status === 0;
export const NO_REDIS_REASON = "redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it when root)";

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as { port: number };
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

export class RedisServer {
  private proc: ChildProcess | undefined;

  private constructor(
    readonly port: number,
    private readonly dir: string,
  ) {}

  static async start(dir: string): Promise<RedisServer> {
    const server = new RedisServer(await freePort(), dir);
    await server.launch();
    return server;
  }

  url(db = 0): string {
    return `redis://127.0.0.1:${this.port}/${db}`;
  }

  private async launch(): Promise<void> {
    const proc = spawn("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.dir], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    this.proc = proc;
    await new Promise<void>((resolve, reject) => {
      let out = "";
      proc.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("Ready to accept connections")) resolve();
      });
      proc.on("exit", (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
    });
  }

  /** Kills the server (every key is lost) and starts it again on the same port. */
  async restart(pauseMs = 0): Promise<void> {
    await this.stop();
    await new Promise((r) => setTimeout(r, pauseMs));
    await this.launch();
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.on("exit", resolve));
    proc.kill("SIGKILL");
    await exited;
  }
}
