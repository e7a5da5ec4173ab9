/**
 * Consumer lag on Kafka, as kafkajs reports it after each fetched batch: a
 * group that starts from the earliest of 12 MiB of events shows a lag on
 * `/metrics` while it catches up, and 0 once it has consumed everything.
 */
import { randomBytes } from "node:crypto";
import { Option } from "effect";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import {
  MessageBusService,
  StartPosition,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { defaultConfig } from "../../src/config.js";
import { clientFor } from "../support/clients.js";
import { startMesh, type TestMesh } from "../support/mesh.js";

const run = randomBytes(4).toString("hex");
let mesh: TestMesh;
beforeAll(async () => {
  const defaults = defaultConfig();
  mesh = await startMesh({
    messaging: {
      ...defaults.messaging,
      kafkaBrokers: inject("infra").kafkaBrokers,
      topicPrefix: `lag-${run}.`,
      partitions: 1,
    },
    telemetry: { ...defaults.telemetry, otlpEndpoint: Option.none() },
  });
});
afterAll(() => mesh.close());

const lagOf = async (group: string) => {
  const text = await (await fetch(`${mesh.url}/metrics`)).text();
  const line = text
    .split("\n")
    .find((l) => l.startsWith("messaging_consumer_lag{") && l.includes(`"${group}"`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
};

describe("messaging.consumer.lag on Kafka", () => {
  it("is above 0 while a group catches up, and 0 once it has everything", async () => {
    const bus = clientFor(MessageBusService, "gRPC (h2c)", mesh.url);
    // 12.5 MiB: more than one fetch takes from a partition (at least 4 MiB), so the first
    // batch leaves a lag behind it.
    const payload = randomBytes(64 * 1024);
    const total = 200;
    for (let i = 0; i < total; i += 50) {
      await bus.publishBatch({
        messages: Array.from({ length: 50 }, () => ({
          messageType: "LagProbe",
          kind: 2,
          contentType: "application/octet-stream",
          payload,
        })),
      });
    }
    const group = `lag-${run}`;
    const abort = new AbortController();
    const seen: number[] = [];
    const sampler = setInterval(() => {
      void lagOf(group).then((lag) => lag !== undefined && seen.push(lag));
    }, 20);
    let consumed = 0;
    try {
      for await (const item of bus.subscribe(
        { group, eventTypes: ["LagProbe"], start: StartPosition.EARLIEST, maxInFlight: 256 },
        { signal: abort.signal },
      )) {
        if (item.event.case !== "delivery") continue;
        await bus.ack({ deliveryId: item.event.value.deliveryId });
        if (++consumed === total) break;
      }
    } finally {
      abort.abort();
    }
    await new Promise((r) => setTimeout(r, 200));
    clearInterval(sampler);
    expect(Math.max(...seen)).toBeGreaterThan(0);
    expect(seen.at(-1)).toBe(0);
  });
});
