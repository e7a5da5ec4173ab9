/**
 * Consume and batched Subscribe over the wire (embedded backend): the
 * bidirectional stream in both HTTP/2 protocols connect-node serves it in
 * (Connect and gRPC) and through the typed client over both of its stacks;
 * its errors with their codes and details; its end on client cancel, on
 * half-close and on server drain, with what was left unsettled redelivered;
 * and Subscribe's batches for a browser-style client over HTTP/1.1.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import { Chunk, Effect, Stream } from "effect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ConsumeRequest,
  ConsumeRequestSchema,
  type ConsumeResponse,
  MessageBusService,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { type Delivery, MessageKind } from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { consume, MeshClient } from "../../src/client/index.js";
import { clientFor, failureOf, type ProtocolName } from "../support/clients.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { pushable } from "../support/pushable.js";

let mesh: TestMesh;
const unique = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;
const bus = (protocol: ProtocolName, url = mesh.url) => clientFor(MessageBusService, protocol, url);

beforeAll(async () => {
  mesh = await startMesh();
});
afterAll(() => mesh.close());

/** Requests pushed by the test as it goes; `end` half-closes. */
const requestQueue = () => {
  const requests = pushable<ConsumeRequest>();
  return {
    ...requests,
    push: (init: Parameters<typeof create<typeof ConsumeRequestSchema>>[1]) =>
      requests.push(create(ConsumeRequestSchema, init)),
  };
};

/** A Consume call: its responses pulled one at a time, and how it ended. */
const openConsume = (protocol: ProtocolName, url = mesh.url) => {
  const requests = requestQueue();
  const abort = new AbortController();
  const responses = bus(protocol, url)
    .consume(requests.iterable, { signal: abort.signal })
    [Symbol.asyncIterator]();
  const next = async (): Promise<ConsumeResponse | undefined> => {
    const r = await responses.next();
    return r.done ? undefined : r.value;
  };
  /** Deliveries until `n` arrived. */
  const deliveries = async (n: number): Promise<Delivery[]> => {
    const got: Delivery[] = [];
    while (got.length < n) {
      const r = await next();
      if (r === undefined) throw new Error(`stream ended after ${got.length} of ${n} deliveries`);
      if (r.response.case === "deliveries") got.push(...r.response.value.deliveries);
    }
    return got;
  };
  /** Resolves with the error the stream ended with, or undefined when it ended cleanly. */
  const ending = async (): Promise<ConnectError | undefined> => {
    try {
      while ((await next()) !== undefined) {}
      return undefined;
    } catch (e) {
      return e as ConnectError;
    }
  };
  return { ...requests, next, deliveries, ending, cancel: () => abort.abort() };
};

const publish = (destination: string, count: number, key = "k") =>
  bus("Connect over HTTP/2").publishBatch({
    messages: Array.from({ length: count }, (_, i) => ({
      kind: MessageKind.COMMAND,
      messageType: "test.Work",
      destination,
      partitionKey: key,
      payload: new TextEncoder().encode(JSON.stringify({ i })),
    })),
  });

const indexOf = (d: Delivery) =>
  (JSON.parse(new TextDecoder().decode(d.message?.payload)) as { i: number }).i;

describe.each(["Connect over HTTP/2", "gRPC (h2c)", "gRPC, native port (grpc-js)"] as const)(
  "Consume over %s",
  (protocol) => {
    it("subscribes, gets batches in key order, acks them on the stream, ends on half-close", async () => {
      const dest = unique("consume");
      await publish(dest, 50);
      const c = openConsume(protocol);
      c.push({
        request: { case: "subscribe", value: { group: dest, destination: dest, maxInFlight: 20 } },
      });
      const first = await c.next();
      expect(first?.response.case).toBe("subscribed");
      const got: Delivery[] = [];
      while (got.length < 50) {
        const batch = await c.deliveries(1);
        got.push(...batch);
        c.push({
          request: { case: "settle", value: { ackIds: batch.map((d) => d.deliveryId) } },
        });
      }
      expect(got.map(indexOf)).toEqual(Array.from({ length: 50 }, (_, i) => i));
      c.end();
      expect(await c.ending()).toBeUndefined();

      // All acknowledged: the group's next consumer gets only what comes next.
      await publish(dest, 1, "k");
      const again = openConsume(protocol);
      again.push({ request: { case: "subscribe", value: { group: dest, destination: dest } } });
      const [next] = await again.deliveries(1);
      expect(indexOf(next as Delivery)).toBe(0);
      expect(next?.message?.messageId).not.toBe(got[0]?.message?.messageId);
      again.cancel();
    });

    it("a first request that does not subscribe is INVALID_ARGUMENT, naming the field", async () => {
      const c = openConsume(protocol);
      c.push({ request: { case: "settle", value: { ackIds: [randomUUID()] } } });
      const error = await c.ending();
      expect(error?.code).toBe(Code.InvalidArgument);
      expect(error?.rawMessage).toMatch(/subscribe/);

      const bad = openConsume(protocol);
      bad.push({
        request: { case: "subscribe", value: { group: "no spaces", eventTypes: ["t"] } },
      });
      const invalid = await bad.ending();
      expect(invalid?.code).toBe(Code.InvalidArgument);
      expect(invalid?.rawMessage).toMatch(/subscribe\.group/);
    });

    it("an ack of an unknown id is NOT_FOUND; the mesh stays healthy", async () => {
      const dest = unique("unknown");
      const c = openConsume(protocol);
      c.push({ request: { case: "subscribe", value: { group: dest, destination: dest } } });
      expect((await c.next())?.response.case).toBe("subscribed");
      const stranger = randomUUID();
      c.push({ request: { case: "settle", value: { ackIds: [stranger] } } });
      const error = await c.ending();
      expect(error?.code).toBe(Code.NotFound);
      const health = await bus(protocol).listDeadLetters({ group: dest });
      expect(health.deadLetters).toEqual([]);
    });

    it("cancelled with deliveries unsettled: they come to the group's next consumer", async () => {
      const dest = unique("cancel");
      await publish(dest, 5);
      const c = openConsume(protocol);
      c.push({ request: { case: "subscribe", value: { group: dest, destination: dest } } });
      const got = await c.deliveries(5);
      c.cancel();
      await c.ending();
      const again = openConsume(protocol);
      again.push({ request: { case: "subscribe", value: { group: dest, destination: dest } } });
      const redelivered = await again.deliveries(5);
      expect(redelivered.map((d) => d.message?.messageId)).toEqual(
        got.map((d) => d.message?.messageId),
      );
      again.cancel();
    });
  },
);

describe("Consume through the typed client", () => {
  it.each(["grpc", "connect"] as const)("over %s: batches, acks, nacks", async (transport) => {
    const dest = unique(`client-${transport}`);
    await publish(dest, 30);
    const result = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const messaging = (yield* MeshClient).messaging;
          const consumer = yield* consume(messaging, {
            group: dest,
            destination: dest,
            retry: { interval: { seconds: 0n, nanos: 50_000_000 } },
          });
          const seen: number[] = [];
          let nacked = false;
          yield* consumer.batches.pipe(
            Stream.flattenIterables,
            Stream.mapEffect((d) => {
              seen.push(indexOf(d));
              // One nack: the message comes again as attempt 2.
              if (indexOf(d) === 7 && !nacked) {
                nacked = true;
                return consumer.nack(d.deliveryId, { reason: "once" }).pipe(Effect.as(d));
              }
              return consumer.ack(d.deliveryId).pipe(Effect.as(d));
            }),
            Stream.filter((d) => d.attempt === 1 || indexOf(d) === 7),
            Stream.take(31),
            Stream.runCollect,
            Effect.map(Chunk.toArray),
          );
          yield* consumer.close;
          return { seen, subscribed: consumer.subscribed.subscriptionId !== "" };
        }).pipe(
          Effect.provide(MeshClient.layer({ seeds: [mesh.url], discovery: false, transport })),
        ),
      ),
    );
    expect(result.subscribed).toBe(true);
    expect(new Set(result.seen)).toEqual(new Set(Array.from({ length: 30 }, (_, i) => i)));
    expect(result.seen.filter((i) => i === 7)).toHaveLength(2);
  });
});

describe("Subscribe, batched, for browsers", () => {
  it("max_batch_size groups deliveries over HTTP/1.1; unary Ack settles them", async () => {
    const dest = unique("browser");
    await publish(dest, 40);
    const client = bus("Connect over HTTP/1.1");
    const abort = new AbortController();
    const items = client
      .subscribe(
        { group: dest, destination: dest, maxInFlight: 40, maxBatchSize: 25 },
        { signal: abort.signal },
      )
      [Symbol.asyncIterator]();
    expect((await items.next()).value?.event.case).toBe("subscribed");
    const got: Delivery[] = [];
    let responses = 0;
    while (got.length < 40) {
      const item = await items.next();
      if (item.done) throw new Error("the subscription ended");
      const value = item.value;
      expect(value.event.case).toBe("deliveries");
      if (value.event.case !== "deliveries") break;
      responses++;
      expect(value.event.value.deliveries.length).toBeLessThanOrEqual(25);
      got.push(...value.event.value.deliveries);
      await client.ack({ deliveryIds: value.event.value.deliveries.map((d) => d.deliveryId) });
    }
    expect(got.map(indexOf)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect(responses).toBeLessThan(40);
    abort.abort();
    const bad = await failureOf(
      (async () => {
        for await (const _ of client.subscribe({
          group: dest,
          destination: dest,
          maxBatchSize: 1001,
        })) {
        }
      })(),
    );
    expect(bad.code).toBe(Code.InvalidArgument);
  });
});

describe("server drain", () => {
  it("ends open Consume streams without a hang or an INTERNAL error", async () => {
    const own = await startMesh();
    const dest = unique("drain");
    await bus("gRPC (h2c)", own.url).publishBatch({
      messages: [{ kind: MessageKind.COMMAND, messageType: "t.T", destination: dest }],
    });
    const c = openConsume("gRPC (h2c)", own.url);
    c.push({ request: { case: "subscribe", value: { group: dest, destination: dest } } });
    await c.deliveries(1);
    const ended = c.ending();
    await own.close();
    const error = await ended;
    // Either a clean end or UNAVAILABLE (the server is going away): never a hang or INTERNAL.
    if (error !== undefined) expect(error.code).toBe(Code.Unavailable);
  });
});
