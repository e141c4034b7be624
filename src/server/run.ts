/**
 * One generation request from templated prompt to finished reply, independent of the wire format:
 * decides the persona action (refuse, or add the conditional steering) from the last prompt
 * token's projections when the request has thresholds that act, streams decoded text (holding
 * back what could be the start of a stop sequence), and builds the persona report.
 */
import { concatSteering } from "../engine/steering.js";
import { type ActionType, buildReport, crossedAtPrompt, type PersonaReport, type ResolvedPersona } from "./persona.js";
import type { Backend, BackendRequest } from "./backend.js";

/** The engine request less what the persona decides (steering, probes), plus stop strings. */
export interface RunInput extends Omit<BackendRequest, "steering" | "probes"> {
  stop: readonly string[];
  persona: ResolvedPersona;
}

export type RunEvent =
  /** Always first: the engine took the request (it fits the context); the prompt's token count. */
  | { type: "accepted"; promptTokens: number }
  /** The last prompt token's projections, before the first generated token (when the engine knows them then). */
  | { type: "prompt"; persona: PersonaReport }
  /** Text to append to the reply. */
  | { type: "text"; text: string }
  /** The request was refused before generating (action refuse). */
  | { type: "refused"; message: string; persona: PersonaReport }
  | { type: "done"; finishReason: "stop" | "length"; completionTokens: number; text: string; persona: PersonaReport; action: { type: ActionType; traits: string[] } | null };

export async function* runGeneration(backend: Backend, input: RunInput, signal: AbortSignal): AsyncGenerator<RunEvent> {
  const p = input.persona;
  let steering = p.steering;
  let promptLast: Float64Array | undefined;
  let action: { type: ActionType; traits: string[] } | null = null;
  // Only an action that changes the reply needs the projections before generating.
  if (p.probes && p.action !== "report" && p.thresholds.size > 0) {
    const pre = await backend.promptProjections({ prompt: input.prompt, maxTokens: input.maxTokens, steering, probes: p.probes }, { signal });
    promptLast = pre.projections;
    const crossed = crossedAtPrompt(p, promptLast);
    if (crossed.length > 0) {
      action = { type: p.action, traits: crossed };
      if (p.action === "refuse") {
        yield { type: "accepted", promptTokens: pre.nPromptTokens };
        const report = buildReport(p, promptLast, undefined, action);
        const why = crossed.map((t) => `${t} ${report[t]!.prompt_projection!.toFixed(3)} > ${report[t]!.threshold}`).join(", ");
        yield { type: "refused", message: `This request was refused: its persona projection crossed the server's threshold (${why}).`, persona: report };
        return;
      }
      steering = concatSteering(steering, p.actionSteering!);
    }
  }

  const { stop: _stop, persona: _persona, ...sampling } = input;
  const stream = backend.submit({ ...sampling, steering, ...(p.probes ? { probes: p.probes } : {}) }, { signal });
  // Keeps an unobserved rejection from surfacing before the loop below reaches it.
  stream.result.catch(() => undefined);
  yield { type: "accepted", promptTokens: await stream.accepted };
  const decoder = new TextDecoder();
  const holdBack = Math.max(0, ...input.stop.map((s) => s.length - 1));
  let text = "";
  let sent = 0;
  let tokens = 0;
  let stopped = false;
  let finishReason: "stop" | "length" = "stop";
  let projections;
  for await (const e of stream) {
    if (e.type === "prompt") {
      if (!e.projections) continue;
      promptLast ??= e.projections;
      if (!action && p.thresholds.size > 0) {
        const crossed = crossedAtPrompt(p, e.projections);
        if (crossed.length) action = { type: "report", traits: crossed };
      }
      yield { type: "prompt", persona: buildReport(p, promptLast, undefined, action) };
      continue;
    }
    tokens++;
    const piece = decoder.decode(e.piece, { stream: true });
    const searched = text.length;
    text += piece;
    const hit = firstStop(text, input.stop, searched);
    if (hit >= 0) {
      text = text.slice(0, hit);
      stopped = true;
    }
    const ready = stopped ? text.length : text.length - holdBack;
    if (ready > sent) {
      // Without stop strings the new text is the piece: slicing the reply would flatten it every token.
      yield { type: "text", text: holdBack === 0 && !stopped ? piece : text.slice(sent, ready) };
      sent = ready;
    }
    // Leaving the stream cancels the request.
    if (stopped) break;
  }
  if (!stopped) {
    const r = await stream.result;
    finishReason = r.finishReason;
    projections = r.projections;
    promptLast ??= r.projections?.promptLast;
    text += decoder.decode();
    if (text.length > sent) yield { type: "text", text: text.slice(sent) };
  }
  yield { type: "done", finishReason: stopped ? "stop" : finishReason, completionTokens: tokens, text, persona: buildReport(p, promptLast, projections, action), action };
}

function firstStop(text: string, stops: readonly string[], searched: number): number {
  let best = -1;
  for (const s of stops) {
    if (s === "") continue;
    // text[0, searched) held no stop, so a match ends past it: rescanning the reply made stops quadratic.
    const i = text.indexOf(s, Math.max(0, searched - (s.length - 1)));
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}
