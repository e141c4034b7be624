/**
 * Server-sent events written straight onto Node's response. A streamed reply sends one event per
 * token, so the per-event path is the server's hot path: this skips the web-stream pipe a
 * framework's SSE helper puts in between (a TransformStream and a ReadableStream, several
 * promises per event) and writes the events of one event-loop turn in a single socket write (a
 * decode step brings one token per request; a busy event loop catching up brings several).
 */
import type { ServerResponse } from "node:http";

export class SseWriter {
  private pending = "";
  private scheduled = false;
  /** Whether anything (the headers at least) went out. */
  private started = false;
  private drain: Promise<void> | undefined;

  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache", Connection: "keep-alive" });
    // Clients see the status at the end of this turn, with the events it queued (one write).
    this.schedule();
  }

  /** Queues one event whose data is a single line (JSON text never contains a newline). */
  send(data: string): void {
    this.pending += `data: ${data}\n\n`;
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flush);
  }

  /** While the client is behind on reading, resolves when it has caught up (a slow reader holds the sender back); undefined otherwise. */
  get backlog(): Promise<void> | undefined {
    return this.drain;
  }

  /** Writes what is queued and ends the response. */
  end(): void {
    if (this.pending !== "") this.flush();
    this.started = true;
    this.res.end();
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    if (this.res.destroyed) return;
    if (this.pending === "") {
      if (!this.started) this.res.flushHeaders();
      this.started = true;
      return;
    }
    this.started = true;
    const full = !this.res.write(this.pending);
    this.pending = "";
    if (full && !this.drain) {
      this.drain = new Promise((resolve) => {
        const done = () => {
          this.res.off("drain", done).off("close", done);
          this.drain = undefined;
          resolve();
        };
        this.res.on("drain", done).on("close", done);
      });
    }
  };
}
