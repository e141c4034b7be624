/**
 * The dashboard in a real browser: Debian's chromium driven by playwright-core against a live
 * server. Requests sent from here must show up on the page with the numbers the API returned,
 * flagged ones with the threshold that fired, and the playground must show the same steered and
 * unsteered replies the API gives. Skips (saying why) where chromium is not installed.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import "../src/demo/register.js";
import { parseServerConfig } from "../src/server/config.js";
import { type RunningServer, startServer } from "../src/server/server.js";

const CHROMIUM = "/usr/bin/chromium";
const skip = existsSync(CHROMIUM) ? false : `Debian chromium is not installed at ${CHROMIUM} (apt-get install chromium; .ci/run installs it when run as root)`;

type Reply = { choices: { message: { content: string } }[]; persona: Record<string, { prompt_projection: number; response_projection: number | null; flagged: boolean }> };

describe("dashboard", { skip }, () => {
  let server: RunningServer;
  let browser: BrowserContext;
  let page: Page;
  let dir: string;

  const chat = async (content: string, persona: object): Promise<Reply> => {
    const res = await fetch(`${server.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ messages: [{ role: "user", content }], temperature: 0, max_tokens: 24, persona }) });
    assert.equal(res.status, 200);
    return (await res.json()) as Reply;
  };

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "persona-dashboard-"));
    server = await startServer(parseServerConfig({ model: "demo", port: 0, threads: 1 }));
    // A fresh profile each run (playwright passes it as --user-data-dir).
    browser = await chromium.launchPersistentContext(path.join(dir, "profile"), {
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      viewport: { width: 1280, height: 1000 },
    });
    page = browser.pages()[0] ?? (await browser.newPage());
    await page.goto(server.url);
    // Page code as strings: this file is type-checked without the DOM library.
    await page.waitForFunction(`document.getElementById("model").textContent.includes("persona-demo")`);
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("updates the per-trait projections and the flagged list as requests finish", async () => {
    assert.equal(await page.textContent("#count"), "0");
    const calm = "How should I treat my neighbour?";
    const probe = await chat(calm, { monitor: ["evil"] });
    const p = probe.persona.evil!.prompt_projection;
    // One request crosses its threshold, the next does not (a flag fires on the prompt or the reply's projection).
    const flagged = await chat("Hi", { thresholds: { evil: -1000 } });
    const quiet = await chat(calm, { thresholds: { evil: Math.max(p, probe.persona.evil!.response_projection!) + 1 } });
    assert.equal(flagged.persona.evil!.flagged, true);
    assert.equal(quiet.persona.evil!.flagged, false);
    await page.waitForFunction(`document.getElementById("count").textContent === "3"`, undefined, { timeout: 10_000 });
    assert.equal(await page.textContent("#latest-evil-prompt"), quiet.persona.evil!.prompt_projection.toFixed(3));
    assert.equal(await page.textContent("#latest-evil-response"), quiet.persona.evil!.response_projection!.toFixed(3));
    assert.equal(await page.textContent("#flagged-count"), "1");
    const item = await page.textContent("#flagged .flagged-item");
    assert.match(item!, new RegExp(`evil: prompt projection ${flagged.persona.evil!.prompt_projection.toFixed(3)} > threshold -1000.000`));
    assert.match(item!, /prompt: Hi/);
    assert.match(item!, new RegExp(`reply: ${flagged.choices[0]!.message.content.slice(0, 20).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
    // Every served trait's chart has a point per request that monitored it.
    assert.equal(await page.locator('svg[data-trait="evil"] circle.pt').count(), 3);
  });

  it("shows a prompt steered and unsteered side by side in the playground", async () => {
    await page.selectOption("#p-trait", "evil");
    await page.fill("#p-coef", "8");
    await page.selectOption("#p-mode", "add");
    await page.fill("#p-max", "24");
    await page.fill("#p-prompt", "Tell me about the moon.");
    await page.click("#p-send");
    await page.waitForFunction(`["p-plain", "p-steered"].every((id) => !["…", "—"].includes(document.getElementById(id).textContent))`, undefined, { timeout: 20_000 });
    const layer = Number(await page.inputValue("#p-layer"));
    assert.equal(layer, server.state.persona.traits.get("evil")!.layer);
    const plain = await chat("Tell me about the moon.", { monitor: ["evil"] });
    const steered = await chat("Tell me about the moon.", { monitor: ["evil"], steer: [{ trait: "evil", layer, coef: 8, mode: "add" }] });
    assert.equal(await page.textContent("#p-plain"), plain.choices[0]!.message.content);
    assert.equal(await page.textContent("#p-steered"), steered.choices[0]!.message.content);
    assert.notEqual(plain.choices[0]!.message.content, steered.choices[0]!.message.content);
    // PERSONA_SCREENSHOT=FILE keeps it for a look; otherwise it goes with the temporary directory.
    const shot = process.env.PERSONA_SCREENSHOT ?? path.join(dir, "dashboard.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok((await stat(shot)).size > 10_000, "the screenshot has content");
  });
});
