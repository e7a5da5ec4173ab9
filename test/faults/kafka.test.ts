/**
 * Kafka (the MessageBus's log) killed under load: a mesh process on a
 * single-node KRaft broker of this test's own publishes events (one by one
 * and in batches) while a subscriber consumes and acknowledges them (and
 * calls go to the other services, on their embedded backends); the broker
 * is killed with SIGKILL, kept down 10 s and started again on its data.
 * Calls fail fast with UNAVAILABLE (none outlives its deadline), MessageBus
 * health goes NOT_SERVING then SERVING, the mesh stays up without leaking,
 * and every publish that returned OK is delivered to the subscriber at least once
 * (counted by message id); the subscriber reconnects when its stream ends,
 * as a client would.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "@effect/vitest";
import { Effect } from "effect";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { MessageKind } from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { backendError } from "../infra/process.js";
import { privateBroker } from "../support/kafka-broker.js";
import {
  checkFault,
  DEADLINE_MS,
  holdStream,
  type Op,
  report,
  runFault,
  startMesh,
  until,
} from "./harness.js";

const TYPE = "FaultTick";

describe("Kafka killed under load", () => {
  it.scopedLive(
    "calls fail fast with UNAVAILABLE, NOT_SERVING then SERVING, no crash or leak, every acknowledged publish delivered",
    () =>
      Effect.gen(function* () {
        const broker = yield* privateBroker;
        const logFile = `${broker.dir}/server.log`;
        const start = () =>
          broker.start().catch((e: unknown) => {
            throw backendError("kafka (private)", `cannot start: ${(e as Error).message}`, logFile);
          });
        yield* Effect.promise(start);
        const mesh = yield* Effect.acquireRelease(
          Effect.promise(() =>
            startMesh({
              FO_KAFKA_BROKERS: broker.address,
              FO_BUS_TOPIC_PREFIX: `faults-${randomBytes(3).toString("hex")}.`,
            }),
          ),
          (m) => Effect.promise(() => m.stop()),
        );
        const bus = mesh.client(MessageBusService);
        const ds = mesh.client(DataStoreService);
        const memory = mesh.client(MemoryManagerService);

        // The subscriber: acknowledges every delivery, reopens its stream when it ends.
        const delivered = new Map<string, number>();
        let subscribed = 0;
        const subscriber = holdStream(
          (signal) =>
            bus.subscribe({ group: "faults", eventTypes: [TYPE], maxInFlight: 64 }, { signal }),
          (res) => {
            if (res.event.case === "subscribed") subscribed++;
            if (res.event.case !== "delivery") return;
            const { deliveryId, message } = res.event.value;
            const id = message?.messageId ?? "";
            delivered.set(id, (delivered.get(id) ?? 0) + 1);
            // A failed ack only means a redelivery later: at least once.
            bus.ack({ deliveryIds: [deliveryId] }, { timeoutMs: DEADLINE_MS }).catch(() => {});
          },
        );
        yield* Effect.addFinalizer(() => Effect.promise(subscriber.stop));
        yield* Effect.promise(() => until("subscribed", () => subscribed > 0, 30_000));

        /** Message id → when the publish returned OK. */
        const acknowledged = new Map<string, number>();
        let next = 0;
        const event = () => ({
          messageId: `m-${next++}`,
          messageType: TYPE,
          partitionKey: `k-${next % 8}`,
          contentType: "application/json",
          payload: new TextEncoder().encode(`{"n":${next}}`),
        });
        const busOps: Op[] = [
          {
            name: "PublishEvent",
            run: async (options) => {
              const e = event();
              await bus.publishEvent({ event: e }, options);
              acknowledged.set(e.messageId, Date.now());
            },
          },
          {
            name: "PublishBatch",
            run: async (options) => {
              const events = [event(), event(), event()].map((e) => ({
                ...e,
                kind: MessageKind.EVENT,
              }));
              await bus.publishBatch({ messages: events }, options);
              for (const e of events) acknowledged.set(e.messageId, Date.now());
            },
          },
        ];
        const otherOps: Op[] = [
          {
            name: "other:ListEntities",
            run: (options) => ds.listEntities({ kind: "faultprobe", pageSize: 5 }, options),
          },
          {
            name: "other:ListAddresses",
            run: (options) => memory.listAddresses({ executionId: "EXEC-faults" }, options),
          },
        ];

        const run = yield* Effect.promise(() =>
          runFault({
            mesh,
            service: MessageBusService.typeName,
            backend: { kill: broker.kill, start },
            ops: [...busOps, ...busOps, ...otherOps],
            workers: 4,
          }),
        );
        // Every acknowledged publish reaches the subscriber (at least once);
        // the consumer rejoins its group after the outage, so this takes a while.
        const undelivered = () => [...acknowledged.keys()].filter((id) => !delivered.has(id));
        const caughtUp = yield* Effect.promise(() =>
          until("delivered", () => undelivered().length === 0, 60_000).then(
            () => Date.now(),
            () => undefined,
          ),
        );
        yield* Effect.promise(() =>
          checkFault("kafka", run, mesh, new Set(busOps.map((o) => o.name))),
        );
        expect(
          undelivered().length,
          `acknowledged publishes not delivered within 60 s (of ${acknowledged.size}; e.g. ${undelivered().slice(0, 5).join(", ")}); stream ends: ${subscriber.ends.join(", ")}`,
        ).toBe(0);
        const deliveries = [...delivered.values()].reduce((a, b) => a + b, 0);
        // The stream either survived the outage or ended with UNAVAILABLE (then reopened).
        expect(subscriber.ends.filter((s) => s !== "Unavailable")).toEqual([]);
        report("kafka", {
          acknowledgedPublishes: acknowledged.size,
          deliveredAcknowledged: [...acknowledged.keys()].filter((id) => delivered.has(id)).length,
          deliveries,
          redeliveries: deliveries - delivered.size,
          allDeliveredAfterServingMs: (caughtUp ?? Number.NaN) - run.timeline.serving,
          subscriptionsOpened: subscribed,
          streamEnds: subscriber.ends,
        });
        yield* Effect.promise(subscriber.stop);
        expect(yield* Effect.promise(() => mesh.stop()), "the mesh's exit code on SIGTERM").toBe(0);
      }),
    180_000,
  );
});
