/**
 * kafkajs' request queue as patched in `patches/`: after a response with
 * nothing waiting it schedules no check (unpatched, every connection ran a
 * 1 ms timer loop for ever, and Node 24+ warned of a negative timeout on
 * each turn); a request held back by throttling or by the in-flight limit
 * still leaves once it may.
 */
import { createRequire } from "node:module";
import { describe, expect, it } from "@effect/vitest";

const require = createRequire(import.meta.url);
interface Queue {
  throttleCheckTimeoutId: unknown;
  push(request: {
    entry: ReturnType<typeof entry>;
    expectResponse: boolean;
    sendRequest: () => void;
  }): void;
  fulfillRequest(response: { correlationId: number; payload: Buffer; size: number }): void;
  maybeThrottle(ms: number): void;
  destroy(): void;
}
const RequestQueue = require("kafkajs/src/network/requestQueue/index.js") as new (options: {
  maxInFlightRequests: number | null;
  requestTimeout: number;
  enforceRequestTimeout: boolean;
  clientId: string;
  broker: string;
  logger: Record<"debug" | "info" | "warn" | "error", () => void>;
}) => Queue;

const quiet = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
const queueOf = (maxInFlightRequests: number | null) =>
  new RequestQueue({
    maxInFlightRequests,
    requestTimeout: 30_000,
    enforceRequestTimeout: false,
    clientId: "test",
    broker: "127.0.0.1:9092",
    logger: quiet,
  });
function entry(correlationId: number) {
  return {
    correlationId,
    apiKey: 0,
    apiName: "Produce",
    apiVersion: 7,
    resolve: () => {},
    reject: () => {},
  };
}

describe("kafkajs request queue (patched)", () => {
  it("schedules nothing once a response leaves nothing pending", () => {
    const queue = queueOf(null);
    const sent: number[] = [];
    queue.push({ entry: entry(1), expectResponse: true, sendRequest: () => sent.push(1) });
    queue.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
    expect(sent).toEqual([1]);
    expect(queue.throttleCheckTimeoutId).toBeNull();
    queue.destroy();
  });

  it("sends a request held by throttling once the throttle ends", async () => {
    const queue = queueOf(null);
    const sent: number[] = [];
    queue.maybeThrottle(30);
    const at = Date.now();
    let sentAt = 0;
    queue.push({
      entry: entry(1),
      expectResponse: true,
      sendRequest: () => {
        sent.push(1);
        sentAt = Date.now();
      },
    });
    expect(sent).toEqual([]);
    await new Promise((r) => setTimeout(r, 200));
    expect(sent).toEqual([1]);
    expect(sentAt - at).toBeGreaterThanOrEqual(29);
    queue.destroy();
  });

  it("sends a request held by the in-flight limit when the one before it is answered", async () => {
    const queue = queueOf(1);
    const sent: number[] = [];
    for (const id of [1, 2]) {
      queue.push({ entry: entry(id), expectResponse: true, sendRequest: () => sent.push(id) });
    }
    expect(sent).toEqual([1]);
    queue.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
    expect(sent).toEqual([1, 2]);
    queue.fulfillRequest({ correlationId: 2, payload: Buffer.alloc(0), size: 0 });
    // The check scheduled while request 2 waited fires once and schedules no other.
    await new Promise((r) => setTimeout(r, 50));
    expect(queue.throttleCheckTimeoutId).toBeNull();
    queue.destroy();
  });
});
