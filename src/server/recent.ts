/** The last N finished requests, numbered, for the dashboard's live view (kept in memory only). */
import type { PersonaReport } from "./persona.js";

export interface RecentRequest {
  id: string;
  created: number;
  endpoint: string;
  prompt: string;
  reply: string;
  finish_reason: string;
  persona: PersonaReport;
  flagged: string[];
  action: "steer" | "refuse" | null;
  steer: string[];
  prompt_tokens: number;
  completion_tokens: number;
  latency_ms: number;
}

const MAX_TEXT = 2000;

export class RecentLog {
  private readonly items: (RecentRequest & { seq: number })[] = [];
  private seq = 0;

  constructor(private readonly capacity: number) {}

  add(r: RecentRequest): void {
    const clip = (s: string) => (s.length > MAX_TEXT ? `${s.slice(0, MAX_TEXT)}…` : s);
    // Per-token traces stay in the reply; the dashboard keeps the summary.
    const persona: PersonaReport = Object.fromEntries(Object.entries(r.persona).map(([t, { trace: _trace, ...rest }]) => [t, rest]));
    this.items.push({ ...r, prompt: clip(r.prompt), reply: clip(r.reply), persona, seq: ++this.seq });
    if (this.items.length > this.capacity) this.items.shift();
  }

  /** Requests numbered above `seq`, oldest first. */
  after(seq: number): (RecentRequest & { seq: number })[] {
    return this.items.filter((r) => r.seq > seq);
  }
}
