/**
 * The MessageBus on the real Kafka broker (test/infra): the conformance
 * suite unchanged, a plain kafkajs consumer (not the mesh) reading a
 * published event as a CloudEvent, and a broker that cannot be reached
 * failing sends with UNAVAILABLE within the send timeout while health says
 * NOT_SERVING.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Kafka as CloudEventsKafka, type KafkaMessage } from "cloudevents";
import { Duration, Effect, ManagedRuntime, Option } from "effect";
import { Kafka, logLevel } from "kafkajs";
import { afterAll, describe, expect, inject, it } from "vitest";
import {
  MessageBusService,
  PublishEventRequestSchema,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { KafkaMessageLog } from "../../src/messaging/kafka.js";
import { MessageBus } from "../../src/messaging/MessageBus.js";
import { HealthRegistry } from "../../src/server/health.js";
import { messageBusConformance } from "../conformance/messagebus.suite.js";
import type { InfraAddresses } from "../infra/index.js";
import { messageBusLayer } from "../support/messaging.js";

const infra: InfraAddresses = inject("infra");

const kafkaLog = (brokers: ReadonlyArray<string>, sendTimeoutMs = 10_000) =>
  KafkaMessageLog.layer({
    brokers,
    clientId: `test-${randomUUID().slice(0, 8)}`,
    partitions: 3,
    replicationFactor: -1,
    retentionMs: 3_600_000,
    sendTimeoutMs,
  });

messageBusConformance("MessageBus on Kafka", () => kafkaLog(infra.kafkaBrokers));

describe("MessageBus on Kafka, seen from outside", () => {
  const runtime = ManagedRuntime.make(messageBusLayer(kafkaLog(infra.kafkaBrokers)));
  afterAll(() => runtime.dispose());

  it("a plain kafkajs consumer reads a published event as a CloudEvent", async () => {
    const type = `Interop.${randomUUID().slice(0, 8)}`;
    const receipt = await runtime.runPromise(
      Effect.flatMap(MessageBus, (bus) =>
        bus.publishEvent(
          create(PublishEventRequestSchema, {
            event: {
              messageType: type,
              source: "importer",
              correlationId: "EXEC-7",
              causationId: "cmd-1",
              partitionKey: "EXEC-7",
              headers: { tenant: "acme" },
              payload: new TextEncoder().encode('{"rows":3}'),
            },
          }),
        ),
      ),
    );
    const kafka = new Kafka({ brokers: [...infra.kafkaBrokers], logLevel: logLevel.NOTHING });
    const consumer = kafka.consumer({ groupId: `outsider-${randomUUID()}`, maxWaitTimeInMs: 100 });
    await consumer.connect();
    try {
      await consumer.subscribe({ topic: receipt.receipt?.topic ?? "", fromBeginning: true });
      const record = await new Promise<{
        headers: Record<string, string>;
        key: string;
        value: Buffer;
      }>((resolve) => {
        void consumer.run({
          eachMessage: async ({ message }) =>
            resolve({
              headers: Object.fromEntries(
                Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]),
              ),
              key: String(message.key),
              value: message.value ?? Buffer.alloc(0),
            }),
        });
      });
      const message: KafkaMessage<Buffer> = {
        headers: record.headers,
        key: record.key,
        value: record.value,
        body: record.value,
      };
      const event = CloudEventsKafka.toEvent<unknown>(message);
      const single = Array.isArray(event) ? event[0] : event;
      expect(single?.specversion).toBe("1.0");
      expect(single?.id).toBe(receipt.receipt?.messageId);
      expect(single?.type).toBe(type);
      expect(single?.source).toBe("importer");
      expect(single?.datacontenttype).toBe("application/json");
      expect(single?.data).toEqual({ rows: 3 });
      expect(single?.correlationid).toBe("EXEC-7");
      expect(single?.causationid).toBe("cmd-1");
      expect(single?.partitionkey).toBe("EXEC-7");
      expect(single?.messagekind).toBe("event");
      expect(record.key).toBe("EXEC-7");
      expect(record.headers.tenant).toBe("acme");
    } finally {
      await consumer.disconnect();
    }
  });
});

describe("MessageBus with the broker unreachable", () => {
  // Nothing listens on port 1: every connection is refused.
  const runtime = ManagedRuntime.make(
    messageBusLayer(kafkaLog(["127.0.0.1:1"], 2_000), {
      sendTimeout: Duration.seconds(2),
    }),
  );
  afterAll(() => runtime.dispose());

  it("fails a publish with UNAVAILABLE within the send timeout, and health says NOT_SERVING", async () => {
    const outcome = await runtime.runPromise(
      Effect.flatMap(MessageBus, (bus) =>
        bus.publishEvent(create(PublishEventRequestSchema, { event: { messageType: "Lost" } })),
      ).pipe(
        Effect.flip,
        Effect.map((e) => e._tag),
        Effect.timeoutFail({ duration: "8 seconds", onTimeout: () => new Error("publish hung") }),
      ),
    );
    expect(outcome).toBe("Unavailable");
    const status = await runtime.runPromise(
      Effect.flatMap(HealthRegistry, (h) => h.check(MessageBusService.typeName)),
    );
    expect(Option.getOrUndefined(status)).toBe("NOT_SERVING");
  });
});
