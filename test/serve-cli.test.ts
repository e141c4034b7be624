/**
 * `persona serve` as a user runs it: a child process (so SIGTERM is real), `persona chat
 * --server` against it, and the refusal to bind beyond loopback without a key.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { writeFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, it } from "node:test";
import { runCli } from "./helpers/cli.js";

const CLI = fileURLToPath(new URL("../src/cli/bin.ts", import.meta.url));
let dir: string;
let server: ChildProcess;
let url: string;
let stderr = "";

function persona(args: string[], input = ""): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], { stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  child.stdin.end(input);
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr: err })));
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "persona-serve-"));
  const config = path.join(dir, "serve.json");
  await writeFile(config, JSON.stringify({ thresholds: { evil: 1000 }, limits: { maxTokens: 500 } }));
  server = spawn(process.execPath, ["--import", "tsx", CLI, "serve", "--model", "demo", "--port", "0", "--threads", "1", "--traits", "evil,sycophantic", "--config", config], { stdio: ["ignore", "pipe", "pipe"] });
  server.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  url = await new Promise<string>((resolve, reject) => {
    let out = "";
    server.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("\n")) resolve(out.trim());
    });
    server.once("exit", (code) => reject(new Error(`serve exited ${code}: ${stderr}`)));
  });
});

after(async () => {
  if (server.exitCode === null) server.kill("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

it("refuses to bind beyond loopback without an API key", async () => {
  const r = await runCli(["serve", "--model", "demo", "--host", "0.0.0.0", "--port", "0"], { PERSONA_API_KEY: undefined });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /refusing to listen on 0\.0\.0\.0 without an API key.*\[E_BAD_INPUT\]/);
});

it("serves the traits asked for, with the config file's thresholds", async () => {
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.match(stderr, /serving persona-demo \(traits: evil, sycophantic\)/);
  const traits = (await (await fetch(`${url}/persona/traits`)).json()) as { traits: { name: string }[]; thresholds: Record<string, number> };
  assert.deepEqual(traits.traits.map((t) => t.name), ["evil", "sycophantic"]);
  assert.deepEqual(traits.thresholds, { evil: 1000 });
});

it("persona chat --server talks to it, steering by trait name", async () => {
  const r = await persona(["chat", "--server", url, "--json", "--temperature", "0", "--max-tokens", "10", "--steer", "evil::-2"], "Hi there\n/quit\n");
  assert.equal(r.code, 0, r.stderr);
  const turn = JSON.parse(r.stdout.trim()) as { reply: string; steering: string[]; persona: Record<string, { prompt_projection: number; threshold: number }> };
  assert.ok(turn.reply.length > 0);
  assert.deepEqual(turn.steering, ["evil:best:-2:response"]);
  assert.equal(turn.persona.evil!.threshold, 1000);
  assert.equal(typeof turn.persona.sycophantic!.prompt_projection, "number");
});

it("finishes the in-flight request on SIGTERM, then exits 0", async () => {
  // A strong push keeps the demo model from ending early, so the reply is still streaming when the signal comes.
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], max_tokens: 500, temperature: 0, stream: true, persona: { steer: [{ trait: "evil", coef: 30 }] } }),
  });
  const reader = res.body!.getReader();
  await reader.read();
  const exited = new Promise<number | null>((resolve) => server.once("exit", (code) => resolve(code)));
  server.kill("SIGTERM");
  let body = "";
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    body += decoder.decode(value, { stream: true });
  }
  assert.match(body, /"finish_reason":"length"/);
  assert.match(body, /data: \[DONE\]/);
  assert.equal(await exited, 0);
  assert.match(stderr, /SIGTERM: finishing 1 in-flight request\(s\)/);
});
