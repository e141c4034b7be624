/** The server's Prometheus metrics (prom-client, one registry per server so tests can run several). */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: "persona_requests_total", help: "HTTP requests by endpoint and status", labelNames: ["endpoint", "status"], registers: [this.registry] });
  readonly tokens = new Counter({ name: "persona_tokens_total", help: "Tokens processed, by kind (prompt, completion)", labelNames: ["kind"], registers: [this.registry] });
  readonly flagged = new Counter({ name: "persona_flagged_total", help: "Requests flagged, by trait", labelNames: ["trait"], registers: [this.registry] });
  readonly actions = new Counter({ name: "persona_actions_total", help: "Persona actions taken (steer, refuse)", labelNames: ["action"], registers: [this.registry] });
  readonly rejected = new Counter({ name: "persona_queue_rejections_total", help: "Requests answered 429 because the queue was full", registers: [this.registry] });
  readonly cancelled = new Counter({ name: "persona_cancelled_total", help: "Generations cancelled by a client disconnect or shutdown", registers: [this.registry] });
  readonly queueDepth = new Gauge({ name: "persona_queue_depth", help: "Requests waiting for a free sequence", registers: [this.registry] });
  readonly inFlight = new Gauge({ name: "persona_requests_in_flight", help: "Generation requests accepted and not finished", registers: [this.registry] });
  readonly latency = new Histogram({
    name: "persona_request_seconds",
    help: "Generation request latency",
    labelNames: ["endpoint"],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly firstToken = new Histogram({
    name: "persona_time_to_first_token_seconds",
    help: "Time from request to the first generated text",
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
}
