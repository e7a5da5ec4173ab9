/**
 * The MessageBus port's contract (issue #5), run unchanged against every log
 * backend (embedded, Kafka): send vs publish fan-out, group load sharing,
 * Ack / Nack / ack-deadline redelivery, in-flight limits, retries then dead
 * letters then replay, request/reply with timeouts, expiration, per-key
 * order, idempotency, start positions, bad input and per-client limits, and
 * the at-least-once count (10,000 keyed messages, random nacks, a member
 * leaving midway).
 *
 * Every test works on destinations, groups, event types and message ids of
 * its own (random suffixes), so runs can share one broker. Real clock
 * throughout: waits are deadlines (generous where a group joins: a Kafka
 * rebalance), retry intervals are short (100 ms) through the Subscribe retry
 * policy, ack deadlines 1 s (the minimum). The only fixed waits watch for
 * something that must NOT happen (QUIET). Subscriptions run in the test's
 * scope; each test waits for `subscribed` before it sends.
 *
 * It runs once per consumer shape (ConsumerShape): Subscribe streams settled
 * by unary Ack / Nack, one delivery per response or batched, and Consume
 * streams settled on the stream itself. The rules are the same; where only
 * what a caller can see differs (a Nack's `dead_lettered`, the errors of
 * Ack), the helpers say so.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, layer, type Vitest } from "@effect/vitest";
import {
  Cause,
  Chunk,
  Context,
  Duration as D,
  Deferred,
  Effect,
  Exit,
  Fiber,
  Layer,
  Option,
  Queue,
  Scope,
  Stream,
} from "effect";
import {
  type ConsumeRequest,
  ConsumeRequestSchema,
  type ConsumeResponse,
  ConsumeResponseSchema,
  ConsumeSettleSchema,
  MessageBusService,
  StartPosition,
  type Subscribed,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import {
  type Delivery,
  type Envelope,
  type EnvelopeSchema,
  MessageKind,
  type PublishReceipt,
} from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { CurrentClient } from "../../src/common/caller.js";
import type { MeshError } from "../../src/common/errors.js";
import type { MessageLog } from "../../src/messaging/log.js";
import { MessageBus } from "../../src/messaging/MessageBus.js";
import { HealthRegistry } from "../../src/server/health.js";
import { messageBusLayer } from "../support/messaging.js";
import { failure, invalid, portCaller } from "../support/port.js";

// --- Calling the port ------------------------------------------------------------

type Methods = typeof MessageBusService.method;
/** The plain-object form of a request (not an already built message), to spread. */
type Fields<K extends keyof Methods> = Exclude<
  MessageInitShape<Methods[K]["input"]>,
  { readonly $typeName: string }
>;
type EnvelopeFields = Exclude<
  MessageInitShape<typeof EnvelopeSchema>,
  { readonly $typeName: string }
>;
type SubscribeFields = Fields<"subscribe">;

/**
 * How the suite's subscriptions consume: `subscribe` (Subscribe, one
 * delivery per response, settled by Ack / Nack, as clients written before
 * batching do), `subscribe-batched` (the same with max_batch_size 100) or
 * `consume` (Consume, settled on its own stream).
 */
export type Shape = "subscribe" | "subscribe-batched" | "consume";
class ConsumerShape extends Context.Tag("test/ConsumerShape")<ConsumerShape, Shape>() {}

const { call, open } = portCaller(MessageBusService, MessageBus);

/** How long a subscription may take to join its group (a Kafka group join and rebalance). */
const JOIN_WAIT = "20 seconds";
/** How long a message may take to be delivered. */
const DELIVERY_WAIT = "15 seconds";
/** How long a test watches for a delivery that must not come. */
const QUIET = "700 millis";

// --- Test data -------------------------------------------------------------------

/** A random suffix: valid in destinations, groups, event types and message ids. */
const unique = (prefix: string): string => `${prefix}${randomBytes(5).toString("hex")}`;

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
const fromUtf8 = (b: Uint8Array): string => new TextDecoder().decode(b);
const json = (value: unknown): Uint8Array => utf8(JSON.stringify(value));
const ms = (n: number) => durationFromMs(n);
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** The value, or a test failure naming what was missing. */
const present = <A>(value: A | undefined, what: string): A => {
  if (value === undefined) throw new Error(`${what} is missing`);
  return value;
};

/** Retries 100 ms apart (the default 3 of them), so redeliveries come quickly. */
const FAST_RETRY = { interval: ms(100) };

const sendCommand = (command: EnvelopeFields) =>
  call("sendCommand", { command }).pipe(
    Effect.map((r): PublishReceipt => present(r.receipt, "receipt")),
  );

const publishEvent = (event: EnvelopeFields) =>
  call("publishEvent", { event }).pipe(
    Effect.map((r): PublishReceipt => present(r.receipt, "receipt")),
  );

/** A command to `destination` with a JSON payload naming `label`. */
const command = (
  destination: string,
  label: string,
  more: EnvelopeFields = {},
): EnvelopeFields => ({
  messageId: unique(`${label}-`),
  messageType: "test.DoSomething",
  destination,
  payload: json({ label }),
  ...more,
});

/** The label a test message carries (see `command`). */
const labelOf = (envelope: Envelope | undefined): string =>
  (JSON.parse(fromUtf8(present(envelope, "message").payload)) as { label: string }).label;

// --- Subscriptions ---------------------------------------------------------------

/**
 * How a subscription's deliveries are settled: by unary Ack / Nack, or on the
 * Consume stream that delivered them. A Nack on a stream has no answer, so
 * its `deadLettered` is unknown there.
 */
interface Settler {
  readonly ack: (deliveryId: string) => Effect.Effect<unknown, MeshError, MessageBus>;
  readonly nack: (
    deliveryId: string,
    reason: string,
    delayMs?: number,
  ) => Effect.Effect<{ readonly deadLettered?: boolean }, MeshError, MessageBus>;
}

const delayOf = (delayMs: number | undefined) =>
  delayMs === undefined ? {} : { delay: ms(delayMs) };

const unarySettler: Settler = {
  ack: (deliveryId) => call("ack", { deliveryId }),
  nack: (deliveryId, reason, delayMs) => call("nack", { deliveryId, reason, ...delayOf(delayMs) }),
};

/** A delivery, with the name of the subscription it came to. */
interface Received {
  readonly sub: string;
  readonly delivery: Delivery;
  readonly via: Settler;
}

const messageOf = (r: Received): Envelope => present(r.delivery.message, "delivery.message");
const idOf = (r: Received): string => messageOf(r).messageId;

const ack = (r: Received) => r.via.ack(r.delivery.deliveryId);
const nack = (r: Received, reason = "", delayMs?: number) =>
  r.via.nack(r.delivery.deliveryId, reason, delayMs);

/** A Nack that must have been retried, not dead-lettered (when the shape can tell). */
const expectRetried = (result: { readonly deadLettered?: boolean }) => {
  if (result.deadLettered !== undefined) expect(result.deadLettered).toBe(false);
};

/** An open subscription (a Subscribe stream running in the test's scope). */
interface Subscription {
  readonly subscribed: Subscribed;
  /** Closes the stream, as a client going away does. */
  readonly close: Effect.Effect<void>;
}

/** What either shape's stream carries, as the suite needs it. */
type Item =
  | { readonly case: "subscribed"; readonly value: Subscribed }
  | { readonly case: "deliveries"; readonly value: ReadonlyArray<Delivery> };

/** A Consume stream's requests after the first: settlements, in the order they were made. */
const streamSettler = (requests: Queue.Enqueue<ConsumeRequest>): Settler => {
  const send = (settle: MessageInitShape<typeof ConsumeSettleSchema>) =>
    Queue.offer(
      requests,
      create(ConsumeRequestSchema, {
        request: { case: "settle", value: create(ConsumeSettleSchema, settle) },
      }),
    );
  return {
    ack: (deliveryId) => send({ ackIds: [deliveryId] }),
    nack: (deliveryId, reason, delayMs) =>
      send({ nacks: [{ deliveryId, reason, ...delayOf(delayMs) }] }).pipe(Effect.as({})),
  };
};

/** Opens the shape's stream for `req`: its items, and how its deliveries are settled. */
const openShape = (req: SubscribeFields) =>
  Effect.gen(function* () {
    const shape = yield* ConsumerShape;
    if (shape !== "consume") {
      const items = open("subscribe", {
        ...req,
        ...(shape === "subscribe-batched" ? { maxBatchSize: 100 } : {}),
      }).pipe(
        Stream.map((item): Item | undefined => {
          switch (item.event.case) {
            case "subscribed":
              return { case: "subscribed", value: item.event.value };
            case "delivery":
              return { case: "deliveries", value: [item.event.value] };
            case "deliveries":
              // A batched response only when asked for one.
              expect(shape).toBe("subscribe-batched");
              return { case: "deliveries", value: item.event.value.deliveries };
            default:
              return undefined;
          }
        }),
      );
      return { items, via: unarySettler };
    }
    const requests = yield* Queue.unbounded<ConsumeRequest>();
    yield* Queue.offer(
      requests,
      create(ConsumeRequestSchema, { request: { case: "subscribe", value: req } }),
    );
    const items = Stream.unwrap(
      Effect.map(MessageBus, (bus) => bus.consume(Stream.fromQueue(requests))),
    ).pipe(
      Stream.map((init): Item | undefined => {
        const item = create(MessageBusService.method.consume.output, init);
        switch (item.response.case) {
          case "subscribed":
            return { case: "subscribed", value: item.response.value };
          case "deliveries":
            expect(item.response.value.deliveries.length).toBeGreaterThan(0);
            return { case: "deliveries", value: item.response.value.deliveries };
          default:
            return undefined;
        }
      }),
    );
    return { items, via: streamSettler(requests) };
  });

/**
 * Opens a subscription of the suite's shape in the test's scope and waits
 * for `subscribed`; each delivery goes to `onDelivery` (one at a time, with
 * how to settle it), a stream that fails or ends to `onEnd`.
 */
const consume = (
  req: SubscribeFields,
  onDelivery: (delivery: Delivery, via: Settler) => Effect.Effect<void, never, MessageBus>,
  onEnd: (error: Error) => Effect.Effect<void> = () => Effect.void,
): Effect.Effect<Subscription, Error, MessageBus | ConsumerShape | Scope.Scope> =>
  Effect.gen(function* () {
    const ready = yield* Deferred.make<Subscribed, Error>();
    const ended = (error: Error) => Deferred.fail(ready, error).pipe(Effect.zipRight(onEnd(error)));
    const { items, via } = yield* openShape(req);
    const fiber = yield* items.pipe(
      Stream.runForEach((item) => {
        switch (item?.case) {
          case "subscribed":
            return Deferred.succeed(ready, item.value);
          case "deliveries":
            return Effect.forEach(item.value, (d) => onDelivery(d, via), { discard: true });
          default:
            return Effect.void;
        }
      }),
      Effect.matchCauseEffect({
        onFailure: (cause) =>
          ended(new Error(`subscription of ${req.group} failed: ${Cause.pretty(cause)}`)),
        onSuccess: () => ended(new Error(`subscription of ${req.group} ended`)),
      }),
      Effect.forkScoped,
    );
    const subscribed = yield* Deferred.await(ready).pipe(
      Effect.timeoutFail({
        duration: JOIN_WAIT,
        onTimeout: () => new Error(`${req.group}: not subscribed within ${JOIN_WAIT}`),
      }),
    );
    return { subscribed, close: Fiber.interrupt(fiber).pipe(Effect.asVoid) };
  });

/**
 * Where a test's subscriptions put their deliveries, tagged with the
 * subscription's name, in arrival order.
 */
const makeInbox = Effect.gen(function* () {
  const queue = yield* Queue.unbounded<Received>();
  const broken = yield* Deferred.make<never, Error>();

  const describeAll = (rs: Iterable<Received>) =>
    [...rs].map((r) => `${r.sub}: ${labelOrId(r)} (attempt ${r.delivery.attempt})`).join(", ");

  /** The next delivery to any of the inbox's subscriptions. */
  const next = (wait: D.DurationInput = DELIVERY_WAIT): Effect.Effect<Received, Error> =>
    Effect.raceFirst(Queue.take(queue), Deferred.await(broken)).pipe(
      Effect.timeoutFail({
        duration: wait,
        onTimeout: () => new Error(`no delivery within ${D.format(D.decode(wait))}`),
      }),
    );

  /** The next `n` deliveries. */
  const take = (n: number, wait: D.DurationInput = DELIVERY_WAIT) =>
    Effect.forEach(range(n), () => next(wait));

  /** Fails when any delivery arrives within `wait` (or a subscription broke). */
  const quiet = (wait: D.DurationInput = QUIET): Effect.Effect<void, Error> =>
    Effect.gen(function* () {
      yield* Effect.sleep(wait);
      const failed = yield* Deferred.poll(broken);
      if (Option.isSome(failed)) yield* failed.value;
      const extra = Chunk.toArray(yield* Queue.takeAll(queue));
      if (extra.length > 0) {
        return yield* Effect.fail(new Error(`unexpected deliveries: ${describeAll(extra)}`));
      }
    });

  const subscribe = (sub: string, req: SubscribeFields) =>
    consume(
      req,
      (delivery, via) => Queue.offer(queue, { sub, delivery, via }),
      (error) => Deferred.fail(broken, error).pipe(Effect.asVoid),
    );

  /** A subscription to the commands of `destination` (its group is the destination). */
  const commands = (sub: string, destination: string, more: SubscribeFields = {}) =>
    subscribe(sub, { retry: FAST_RETRY, ...more, group: destination, destination });

  /** A subscription of `group` to events of `types`. */
  const events = (
    sub: string,
    group: string,
    types: ReadonlyArray<string>,
    more: SubscribeFields = {},
  ) => subscribe(sub, { retry: FAST_RETRY, ...more, group, eventTypes: [...types] });

  return { next, take, quiet, subscribe, commands, events };
});

const labelOrId = (r: Received): string => {
  try {
    return labelOf(r.delivery.message);
  } catch {
    return r.delivery.message?.messageId ?? "?";
  }
};

/** Starts a subscription's stream and expects it to fail at once (before `subscribed`). */
const subscribeOnce = (req: SubscribeFields) =>
  Stream.runDrain(Stream.take(open("subscribe", req), 1));

/** Polls `probe` every 100 ms until it yields a value; fails after `within`. */
const eventually = <A, E, R>(
  what: string,
  probe: Effect.Effect<Option.Option<A>, E, R>,
  within: D.DurationInput = DELIVERY_WAIT,
) =>
  Effect.gen(function* () {
    for (;;) {
      const found = yield* probe;
      if (Option.isSome(found)) return found.value;
      yield* Effect.sleep("100 millis");
    }
  }).pipe(
    Effect.timeoutFail({
      duration: within,
      onTimeout: () => new Error(`${what}: not within ${D.format(D.decode(within))}`),
    }),
  );

/** Per key, the message indexes in the order they were first delivered. */
const firstDeliveryOrder = () => {
  const seen = new Set<number>();
  const byKey = new Map<string, number[]>();
  return {
    seen,
    /** Records a delivery of message `index` (keyed `key`); true when it is its first. */
    delivered: (key: string, index: number): boolean => {
      if (seen.has(index)) return false;
      seen.add(index);
      const order = byKey.get(key) ?? [];
      order.push(index);
      byKey.set(key, order);
      return true;
    },
    /** Keys whose first deliveries were not in send (index) order. */
    outOfOrder: (): string[] =>
      [...byKey]
        .filter(([, order]) => order.some((n, i) => i > 0 && n < (order[i - 1] as number)))
        .map(([key, order]) => `${key}: ${order.join(",")}`),
  };
};

type It = Vitest.MethodsNonLive<MessageBus | HealthRegistry | ConsumerShape, true>;

// --- Send and publish ----------------------------------------------------------------

const routingTests = (it: It) =>
  describe("send and publish", () => {
    it.scoped("a command reaches exactly one subscription of its destination's group", () =>
      Effect.gen(function* () {
        const dest = unique("dest-");
        const inbox = yield* makeInbox;
        yield* inbox.commands("a", dest);
        yield* inbox.commands("b", dest);
        const receipt = yield* sendCommand(command(dest, "only-once"));
        expect(receipt.topic).not.toBe("");
        expect(receipt.duplicate).toBe(false);
        const got = yield* inbox.next();
        expect(labelOf(got.delivery.message)).toBe("only-once");
        expect(["a", "b"]).toContain(got.sub);
        yield* ack(got);
        yield* inbox.quiet();
      }),
    );

    it.scoped("an event reaches one subscription in each subscribing group", () =>
      Effect.gen(function* () {
        const type = unique("test.Happened.");
        const [g1, g2] = [unique("g1-"), unique("g2-")];
        const inbox = yield* makeInbox;
        yield* inbox.events("g1-a", g1, [type]);
        yield* inbox.events("g1-b", g1, [type]);
        yield* inbox.events("g2", g2, [type]);
        const receipt = yield* publishEvent({ messageType: type, payload: json({ label: "e" }) });
        const got = yield* inbox.take(2);
        const subs = got.map((r) => r.sub).sort();
        expect(subs).toHaveLength(2);
        expect(subs[1]).toBe("g2");
        expect(["g1-a", "g1-b"]).toContain(subs[0]);
        for (const r of got) {
          const m = messageOf(r);
          expect(m.messageId).toBe(receipt.messageId);
          expect(m.kind).toBe(MessageKind.EVENT);
          expect(m.destination).toBe("");
          yield* ack(r);
        }
        yield* inbox.quiet();
      }),
    );

    it.scoped(
      "the envelope arrives as sent, with id, time, source and content type filled in",
      () =>
        Effect.gen(function* () {
          const dest = unique("dest-");
          const inbox = yield* makeInbox;
          yield* inbox.commands("a", dest);
          const sent: EnvelopeFields = {
            messageType: "test.Import",
            destination: dest,
            correlationId: "corr-1",
            causationId: "cause-1",
            conversationId: "conv-1",
            headers: { tenant: "acme", "x.trace-id": "t-1" },
            partitionKey: "order-42",
            payload: json({ label: "full", n: 1 }),
          };
          const before = Date.now();
          const receipt = yield* sendCommand(sent);
          expect(receipt.messageId).not.toBe("");
          const got = yield* inbox.next();
          const m = messageOf(got);
          expect(m).toMatchObject({
            messageId: receipt.messageId,
            messageType: "test.Import",
            kind: MessageKind.COMMAND,
            destination: dest,
            correlationId: "corr-1",
            causationId: "cause-1",
            conversationId: "conv-1",
            headers: { tenant: "acme", "x.trace-id": "t-1" },
            partitionKey: "order-42",
            contentType: "application/json",
            source: "floworchestrator-mesh",
            replyTo: "",
            inReplyTo: "",
          });
          expect(JSON.parse(fromUtf8(m.payload))).toEqual({ label: "full", n: 1 });
          expect(timestampMs(present(m.time, "time"))).toBeGreaterThanOrEqual(before - 1000);
          expect(m.expireTime).toBeUndefined();
          expect(got.delivery.attempt).toBe(1);
          expect(got.delivery.deliveryId).not.toBe("");
          expect(got.delivery).toMatchObject({
            topic: receipt.topic,
            partition: receipt.partition,
            offset: receipt.offset,
          });
          yield* ack(got);

          // Protobuf payloads are opaque bytes; a given source and time are kept.
          const bytes = new Uint8Array([0, 255, 1, 128]);
          yield* sendCommand({
            messageType: "test.Proto",
            destination: dest,
            contentType: "application/protobuf",
            source: "importer-7",
            time: timestampFromMs(1_700_000_000_000),
            payload: bytes,
          });
          const proto = messageOf(yield* inbox.next());
          expect(proto.contentType).toBe("application/protobuf");
          expect([...proto.payload]).toEqual([...bytes]);
          expect(proto.source).toBe("importer-7");
          expect(timestampMs(present(proto.time, "time"))).toBe(1_700_000_000_000);
        }),
    );

    it.scoped("PublishBatch validates every message first, then sends all, receipts in order", () =>
      Effect.gen(function* () {
        const dest = unique("dest-");
        const type = unique("test.Batched.");
        const inbox = yield* makeInbox;
        yield* inbox.commands("cmd", dest);
        yield* inbox.events("evt", unique("g-"), [type]);
        // The second message has no kind: nothing of the batch is sent.
        yield* invalid(
          call("publishBatch", {
            messages: [
              { ...command(dest, "never"), kind: MessageKind.COMMAND },
              { messageType: type, payload: json({ label: "never" }) },
            ],
          }),
          "messages[1].kind",
        );
        yield* invalid(call("publishBatch", { messages: [] }), "messages");
        const { receipts } = yield* call("publishBatch", {
          messages: [
            { ...command(dest, "b0"), kind: MessageKind.COMMAND },
            { messageType: type, kind: MessageKind.EVENT, payload: json({ label: "b1" }) },
            { ...command(dest, "b2"), kind: MessageKind.COMMAND },
          ],
        });
        expect(receipts).toHaveLength(3);
        expect(receipts[0]?.topic).toBe(receipts[2]?.topic);
        expect(receipts[1]?.topic).not.toBe(receipts[0]?.topic);
        const got = yield* inbox.take(3);
        const bySub = (sub: string) =>
          got
            .filter((r) => r.sub === sub)
            .map((r) => labelOf(r.delivery.message))
            .sort();
        expect(bySub("cmd")).toEqual(["b0", "b2"]);
        expect(bySub("evt")).toEqual(["b1"]);
        expect(got.map(idOf).sort()).toEqual(receipts.map((r) => r.messageId).sort());
        yield* Effect.forEach(got, ack);
        yield* inbox.quiet();
      }),
    );

    it.scoped("a message id is published once: sent again, the receipt is the first one's", () =>
      Effect.gen(function* () {
        const dest = unique("dest-");
        const inbox = yield* makeInbox;
        yield* inbox.commands("a", dest);
        const once = command(dest, "idempotent");
        const first = yield* sendCommand(once);
        const second = yield* sendCommand({ ...once, payload: json({ label: "changed" }) });
        expect(first.duplicate).toBe(false);
        expect(second.duplicate).toBe(true);
        expect(second).toMatchObject({
          messageId: first.messageId,
          topic: first.topic,
          partition: first.partition,
          offset: first.offset,
        });
        const got = yield* inbox.next();
        expect(labelOf(got.delivery.message)).toBe("idempotent");
        yield* ack(got);
        yield* inbox.quiet();
      }),
    );
  });

// --- Consumer groups -------------------------------------------------------------------

const groupTests = (it: It) =>
  describe("groups", () => {
    it.scoped(
      "two subscriptions of one group share keyed messages over 3 partitions, each message once",
      () =>
        Effect.gen(function* () {
          const dest = unique("shared-");
          const inbox = yield* makeInbox;
          yield* inbox.commands("a", dest);
          yield* inbox.commands("b", dest);
          const n = 60;
          const { receipts } = yield* call("publishBatch", {
            messages: range(n).map((i) => ({
              ...command(dest, `m${i}`, { partitionKey: `key-${i % 12}` }),
              kind: MessageKind.COMMAND,
            })),
          });
          expect(new Set(receipts.map((r) => r.partition)).size).toBe(3);
          // Acked as they come (each member has 16 in flight at most).
          const got = yield* Effect.forEach(range(n), () => Effect.tap(inbox.next(), ack));
          const labels = got.map((r) => labelOf(r.delivery.message));
          expect(new Set(labels).size).toBe(n);
          expect(got.every((r) => r.delivery.attempt === 1)).toBe(true);
          const counts = { a: 0, b: 0 };
          for (const r of got) counts[r.sub as "a" | "b"]++;
          expect(counts.a).toBeGreaterThan(0);
          expect(counts.b).toBeGreaterThan(0);
          yield* inbox.quiet();
        }),
    );

    it.scoped("per key, first deliveries arrive in send order, nacks and redeliveries aside", () =>
      Effect.gen(function* () {
        const dest = unique("ordered-");
        const inbox = yield* makeInbox;
        yield* inbox.commands("a", dest);
        yield* inbox.commands("b", dest);
        const n = 120;
        const keyOf = (i: number) => `key-${i % 4}`;
        for (const i of range(n)) {
          yield* sendCommand(command(dest, String(i), { partitionKey: keyOf(i) }));
        }
        const order = firstDeliveryOrder();
        const acked = new Set<number>();
        while (acked.size < n) {
          const r = yield* inbox.next();
          const i = Number(labelOf(r.delivery.message));
          order.delivered(keyOf(i), i);
          // Every tenth message fails once: its redelivery must not hold up its key.
          if (i % 10 === 3 && r.delivery.attempt === 1) {
            yield* nack(r, "not yet");
          } else {
            yield* ack(r);
            acked.add(i);
          }
        }
        expect(order.outOfOrder()).toEqual([]);
        expect(order.seen.size).toBe(n);
      }),
    );

    it.scoped(
      "a new group starting LATEST misses earlier messages; one starting EARLIEST gets them",
      () =>
        Effect.gen(function* () {
          const type = unique("test.Started.");
          const event = (label: string) => ({ messageType: type, payload: json({ label }) });
          yield* publishEvent(event("before"));
          const inbox = yield* makeInbox;
          yield* inbox.events("latest", unique("latest-"), [type], { start: StartPosition.LATEST });
          yield* inbox.events("earliest", unique("earliest-"), [type], {
            start: StartPosition.EARLIEST,
          });
          yield* publishEvent(event("after"));
          const got = yield* inbox.take(3);
          yield* Effect.forEach(got, ack);
          const of = (sub: string) =>
            got.filter((r) => r.sub === sub).map((r) => labelOf(r.delivery.message));
          expect(of("latest")).toEqual(["after"]);
          expect(of("earliest")).toEqual(["before", "after"]);
          yield* inbox.quiet();
        }),
    );
  });

// --- Acknowledgement and redelivery ------------------------------------------------------

const ackTests = (it: It) =>
  describe("acknowledgement and redelivery", () => {
    it.scoped(
      "acked messages are committed: a later subscription of the group does not get them again",
      () =>
        Effect.gen(function* () {
          const dest = unique("committed-");
          const inbox = yield* makeInbox;
          const first = yield* inbox.commands("first", dest);
          // One key: one partition, so an uncommitted m1 would come before m2.
          yield* sendCommand(command(dest, "m1", { partitionKey: "k" }));
          const m1 = yield* inbox.next();
          expect(labelOf(m1.delivery.message)).toBe("m1");
          yield* ack(m1);
          yield* first.close;
          yield* inbox.commands("second", dest);
          yield* sendCommand(command(dest, "m2", { partitionKey: "k" }));
          const next = yield* inbox.next();
          expect([next.sub, labelOf(next.delivery.message)]).toEqual(["second", "m2"]);
          yield* ack(next);
          yield* inbox.quiet();
        }),
    );

    it.scoped("one Ack settles many deliveries; an unknown id among them is NotFound", () =>
      Effect.gen(function* () {
        const dest = unique("batched-");
        const inbox = yield* makeInbox;
        const first = yield* inbox.commands("first", dest);
        for (const n of range(3)) {
          yield* sendCommand(command(dest, `m${n}`, { partitionKey: "k" }));
        }
        const got = yield* inbox.take(3);
        const stranger = randomUUID();
        yield* failure(
          call("ack", {
            deliveryId: got[0]?.delivery.deliveryId,
            deliveryIds: [stranger, ...got.slice(1).map((r) => r.delivery.deliveryId)],
          }),
          "NotFound",
        ).pipe(Effect.tap((e) => expect(e.metadata?.delivery_id).toBe(stranger)));
        // The known ones were settled and committed: the next subscription starts after them.
        yield* first.close;
        yield* inbox.commands("second", dest);
        yield* sendCommand(command(dest, "m3", { partitionKey: "k" }));
        const next = yield* inbox.next();
        expect([next.sub, labelOf(next.delivery.message)]).toEqual(["second", "m3"]);
        yield* ack(next);
      }),
    );

    it.scoped("a nacked message is redelivered with attempt 2 and a new delivery id", () =>
      Effect.gen(function* () {
        const dest = unique("nacked-");
        const inbox = yield* makeInbox;
        yield* inbox.commands("a", dest);
        yield* sendCommand(command(dest, "retry-me"));
        const first = yield* inbox.next();
        expect(first.delivery.attempt).toBe(1);
        expectRetried(yield* nack(first, "try later"));
        const second = yield* inbox.next();
        expect(idOf(second)).toBe(idOf(first));
        expect(second.delivery.attempt).toBe(2);
        expect(second.delivery.deliveryId).not.toBe(first.delivery.deliveryId);
        // The first delivery is settled: its id is no longer known.
        yield* failure(call("ack", { deliveryId: first.delivery.deliveryId }), "NotFound");
        yield* ack(second);
        yield* inbox.quiet();
      }),
    );

    it.scoped("a Nack with a delay is not redelivered before the delay", () =>
      Effect.gen(function* () {
        const dest = unique("delayed-");
        const inbox = yield* makeInbox;
        yield* inbox.commands("a", dest);
        yield* sendCommand(command(dest, "later"));
        const first = yield* inbox.next();
        yield* nack(first, "busy", 2000);
        yield* inbox.quiet("1 second");
        const again = yield* inbox.next();
        expect([idOf(again), again.delivery.attempt]).toEqual([idOf(first), 2]);
        yield* ack(again);
      }),
    );

    it.scoped(
      "unacknowledged past the ack deadline: redelivered with attempt 2, to the other subscription",
      () =>
        Effect.gen(function* () {
          const dest = unique("deadline-");
          const inbox = yield* makeInbox;
          const settings = { group: dest, ackDeadline: ms(1000) };
          yield* inbox.commands("a", dest, settings);
          yield* inbox.commands("b", dest, settings);
          yield* sendCommand(command(dest, "slow"));
          const first = yield* inbox.next();
          expect(first.delivery.attempt).toBe(1);
          // Not acknowledged: it comes again once the deadline (1 s) passed.
          const again = yield* inbox.next();
          expect(idOf(again)).toBe(idOf(first));
          expect(again.delivery.attempt).toBe(2);
          expect(again.sub).not.toBe(first.sub);
          yield* ack(again);
          yield* inbox.quiet();
        }),
    );

    it.scoped("in flight when its stream closes: redelivered to the remaining subscription", () =>
      Effect.gen(function* () {
        const dest = unique("closing-");
        const inbox = yield* makeInbox;
        const subs = {
          a: yield* inbox.commands("a", dest),
          b: yield* inbox.commands("b", dest),
        };
        yield* sendCommand(command(dest, "orphan"));
        const first = yield* inbox.next();
        const receiver = first.sub as "a" | "b";
        yield* subs[receiver].close;
        const again = yield* inbox.next();
        expect(idOf(again)).toBe(idOf(first));
        expect(again.sub).toBe(receiver === "a" ? "b" : "a");
        expect(again.delivery.attempt).toBe(2);
        yield* ack(again);
        yield* inbox.quiet();
      }),
    );

    it.scoped(
      "in flight when the group's last subscription closes: the next one gets it, even when a later one was acked",
      () =>
        Effect.gen(function* () {
          const dest = unique("last-");
          const inbox = yield* makeInbox;
          const first = yield* inbox.commands("first", dest);
          // One key, one partition: m1 then m2.
          yield* sendCommand(command(dest, "m1", { partitionKey: "k" }));
          yield* sendCommand(command(dest, "m2", { partitionKey: "k" }));
          const [m1, m2] = yield* inbox.take(2);
          expect([m1, m2].map((r) => labelOf(r?.delivery.message))).toEqual(["m1", "m2"]);
          // m2 done, m1 not: the group's offset must not move past m1.
          yield* ack(present(m2, "m2"));
          yield* first.close;
          yield* inbox.commands("second", dest);
          const again = yield* inbox.next();
          expect([again.sub, labelOf(again.delivery.message)]).toEqual(["second", "m1"]);
          yield* ack(again);
        }),
    );

    it.scoped("max_in_flight bounds the deliveries not yet acknowledged", () =>
      Effect.gen(function* () {
        const dest = unique("bounded-");
        const inbox = yield* makeInbox;
        yield* inbox.commands("a", dest, { group: dest, maxInFlight: 2 });
        const n = 6;
        for (const i of range(n)) yield* sendCommand(command(dest, `m${i}`));
        const firstTwo = yield* inbox.take(2);
        yield* inbox.quiet();
        yield* ack(present(firstTwo[0], "delivery"));
        const third = yield* inbox.next();
        yield* inbox.quiet();
        const seen = [...firstTwo, third];
        let outstanding = [present(firstTwo[1], "delivery"), third];
        while (seen.length < n) {
          yield* Effect.forEach(outstanding, ack);
          outstanding = yield* inbox.take(Math.min(2, n - seen.length));
          seen.push(...outstanding);
        }
        yield* Effect.forEach(outstanding, ack);
        expect(seen.map((r) => labelOf(r.delivery.message)).sort()).toEqual(
          range(n).map((i) => `m${i}`),
        );
        yield* inbox.quiet();
      }),
    );
  });

// --- Retries and dead letters -----------------------------------------------------------

const deadLetters = (group: string) =>
  call("listDeadLetters", { group, pageSize: 100 }).pipe(Effect.map((r) => r.deadLetters));

/**
 * A Nack that must have dead-lettered its message, the group's `count`th:
 * Nack says so; on a stream, where nothing answers, the dead letter shows.
 */
const expectDeadLettered = (
  result: { readonly deadLettered?: boolean },
  group: string,
  count: number,
) =>
  result.deadLettered !== undefined
    ? Effect.sync(() => expect(result.deadLettered).toBe(true))
    : eventually(
        `dead letter ${count} of ${group}`,
        Effect.map(deadLetters(group), (ls) =>
          ls.length >= count ? Option.some(ls) : Option.none(),
        ),
      ).pipe(Effect.asVoid);

const deadLetterTests = (it: It) =>
  describe("retries and dead letters", () => {
    it.scoped(
      "retries exhausted: a dead letter with reason, attempts and origin, and a Fault event",
      () =>
        Effect.gen(function* () {
          const dest = unique("failing-");
          const type = unique("test.Fragile.");
          const inbox = yield* makeInbox;
          yield* inbox.events("faults", unique("faults-"), [`Fault.${type}`]);
          yield* inbox.commands("worker", dest, {
            group: dest,
            retry: { maxRetries: 1, interval: ms(100) },
          });
          const receipt = yield* sendCommand(
            command(dest, "doomed", { messageType: type, correlationId: "corr-doomed" }),
          );
          const first = yield* inbox.next();
          expectRetried(yield* nack(first, "boom 1"));
          const second = yield* inbox.next();
          expect([second.sub, second.delivery.attempt]).toEqual(["worker", 2]);
          yield* expectDeadLettered(yield* nack(second, "boom 2"), dest, 1);

          const fault = yield* inbox.next();
          expect(fault.sub).toBe("faults");
          const f = messageOf(fault);
          expect(f.messageType).toBe(`Fault.${type}`);
          expect(f.kind).toBe(MessageKind.EVENT);
          expect(f.causationId).toBe(receipt.messageId);
          expect(f.correlationId).toBe("corr-doomed");
          expect(JSON.parse(fromUtf8(f.payload))).toMatchObject({
            messageId: receipt.messageId,
            messageType: type,
            reason: "boom 2",
          });
          yield* ack(fault);

          const [letter, ...more] = yield* deadLetters(dest);
          expect(more).toEqual([]);
          expect(letter?.deadLetterId).not.toBe("");
          expect(letter?.message?.messageId).toBe(receipt.messageId);
          expect(letter?.message?.messageType).toBe(type);
          expect(labelOf(letter?.message)).toBe("doomed");
          expect(letter).toMatchObject({
            reason: "boom 2",
            attempts: 2,
            originalTopic: receipt.topic,
            originalPartition: receipt.partition,
            originalOffset: receipt.offset,
          });
          expect(letter?.deadLetterTime).toBeDefined();
          // Dead-lettered: not delivered again.
          yield* inbox.quiet();
        }),
    );

    it.scoped(
      "never acknowledged: dead-lettered once its retries ran out, the deadline as reason",
      () =>
        Effect.gen(function* () {
          const dest = unique("ignored-");
          const inbox = yield* makeInbox;
          yield* inbox.commands("a", dest, {
            group: dest,
            ackDeadline: ms(1000),
            retry: { maxRetries: 0 },
          });
          const receipt = yield* sendCommand(command(dest, "ignored"));
          const got = yield* inbox.next();
          expect(idOf(got)).toBe(receipt.messageId);
          const letter = yield* eventually(
            "dead letter",
            Effect.map(deadLetters(dest), (ls) => Option.fromNullable(ls[0])),
          );
          expect(letter.message?.messageId).toBe(receipt.messageId);
          expect(letter.attempts).toBe(1);
          expect(letter.reason).toMatch(/deadline/i);
          yield* inbox.quiet();
        }),
    );

    it.scoped("ReplayDeadLetters sends them back to the group as first deliveries", () =>
      Effect.gen(function* () {
        const dest = unique("replayed-");
        const inbox = yield* makeInbox;
        yield* inbox.commands("a", dest, { group: dest, retry: { maxRetries: 0 } });
        const receipt = yield* sendCommand(command(dest, "phoenix"));
        const got = yield* inbox.next();
        yield* expectDeadLettered(yield* nack(got, "not now"), dest, 1);
        const [letter] = yield* deadLetters(dest);
        const id = present(letter, "dead letter").deadLetterId;

        // Unknown ids: NotFound, and nothing is replayed.
        yield* failure(
          call("replayDeadLetters", { group: dest, deadLetterIds: [id, "0-999999999"] }),
          "NotFound",
        );
        yield* failure(
          call("replayDeadLetters", { group: unique("other-"), deadLetterIds: [id] }),
          "NotFound",
        );
        yield* invalid(
          call("replayDeadLetters", { group: dest, deadLetterIds: ["not-an-id"] }),
          "dead_letter_ids[0]",
        );
        yield* invalid(
          call("replayDeadLetters", { group: dest, deadLetterIds: [] }),
          "dead_letter_ids",
        );
        yield* inbox.quiet();

        const { replayedCount } = yield* call("replayDeadLetters", {
          group: dest,
          deadLetterIds: [id],
        });
        expect(replayedCount).toBe(1);
        const again = yield* inbox.next();
        expect(idOf(again)).toBe(receipt.messageId);
        expect(labelOf(again.delivery.message)).toBe("phoenix");
        expect(again.delivery.attempt).toBe(1);
        yield* ack(again);
        yield* inbox.quiet();
      }),
    );

    it.scoped("ListDeadLetters pages through a group's dead letters, oldest first", () =>
      Effect.gen(function* () {
        const dest = unique("paged-");
        const inbox = yield* makeInbox;
        yield* inbox.commands("a", dest, { group: dest, retry: { maxRetries: 0 } });
        for (const i of range(3)) {
          yield* sendCommand(command(dest, `d${i}`, { partitionKey: "one-key" }));
        }
        for (const [i, r] of (yield* inbox.take(3)).entries()) {
          const result = yield* nack(r, `failed ${labelOf(r.delivery.message)}`);
          yield* expectDeadLettered(result, dest, i + 1);
        }
        const page1 = yield* call("listDeadLetters", { group: dest, pageSize: 2 });
        expect(page1.deadLetters).toHaveLength(2);
        expect(page1.nextPageToken).not.toBe("");
        const page2 = yield* call("listDeadLetters", {
          group: dest,
          pageSize: 2,
          pageToken: page1.nextPageToken,
        });
        expect(page2.deadLetters).toHaveLength(1);
        expect(page2.nextPageToken).toBe("");
        const all = [...page1.deadLetters, ...page2.deadLetters];
        expect(all.map((l) => labelOf(l.message))).toEqual(["d0", "d1", "d2"]);
        expect(all.map((l) => l.reason)).toEqual(["failed d0", "failed d1", "failed d2"]);
        expect(new Set(all.map((l) => l.deadLetterId)).size).toBe(3);
        expect(yield* deadLetters(unique("empty-"))).toEqual([]);
      }),
    );
  });

// --- Request / reply -------------------------------------------------------------------

const requestTests = (it: It) =>
  describe("request / reply", () => {
    /** Answers the next request the inbox receives with `label`; returns it. */
    const answer = (inbox: Effect.Effect.Success<typeof makeInbox>, label: string) =>
      Effect.gen(function* () {
        const got = yield* inbox.next();
        const m = messageOf(got);
        expect(m.replyTo).not.toBe("");
        const { receipt } = yield* call("reply", {
          inReplyTo: m.messageId,
          replyTo: m.replyTo,
          reply: { messageType: "test.Pong", payload: json({ label }) },
        });
        expect(receipt?.messageId).not.toBe("");
        yield* ack(got);
        return m;
      });

    it.scoped("Request gets the reply sent with the delivered message_id and reply_to", () =>
      Effect.gen(function* () {
        const dest = unique("responder-");
        const inbox = yield* makeInbox;
        yield* inbox.commands("responder", dest);
        const id = unique("req-");
        const requesting = yield* call("request", {
          command: command(dest, "ping", { messageId: id, messageType: "test.Ping" }),
          timeout: ms(15_000),
        }).pipe(Effect.fork);
        const request = yield* answer(inbox, "pong");
        expect(request).toMatchObject({
          messageId: id,
          messageType: "test.Ping",
          kind: MessageKind.COMMAND,
        });
        const { reply } = yield* Fiber.join(requesting);
        expect(reply?.inReplyTo).toBe(id);
        expect(reply?.messageType).toBe("test.Pong");
        expect(reply?.correlationId).toBe(id);
        expect(labelOf(reply)).toBe("pong");
      }),
    );

    it.scoped("no reply in time: DeadlineExceeded; a late reply is accepted and dropped", () =>
      Effect.gen(function* () {
        const dest = unique("slow-");
        const id = unique("req-");
        // The command outlives the request (its own expire_time): a late responder gets it.
        const expireTime = timestampFromMs(Date.now() + 60_000);
        yield* failure(
          call("request", {
            command: command(dest, "late", { messageId: id, expireTime }),
            timeout: ms(500),
          }),
          "DeadlineExceeded",
        );
        // A responder that comes late still gets the command; its reply is dropped.
        const inbox = yield* makeInbox;
        yield* inbox.commands("responder", dest);
        const late = yield* answer(inbox, "too late");
        expect(late.messageId).toBe(id);
        // The next request gets its own reply, not the late one.
        const id2 = unique("req-");
        const requesting = yield* call("request", {
          command: command(dest, "second", { messageId: id2 }),
          timeout: ms(15_000),
        }).pipe(Effect.fork);
        const second = yield* answer(inbox, "in time");
        expect(second.messageId).toBe(id2);
        const { reply } = yield* Fiber.join(requesting);
        expect([reply?.inReplyTo, labelOf(reply)]).toEqual([id2, "in time"]);
      }),
    );

    it.scoped(
      "a request without expire_time expires with its timeout: nobody acts on it later",
      () =>
        Effect.gen(function* () {
          const dest = unique("gone-");
          yield* failure(
            call("request", { command: command(dest, "abandoned"), timeout: ms(300) }),
            "DeadlineExceeded",
          );
          const inbox = yield* makeInbox;
          yield* inbox.commands("responder", dest);
          yield* sendCommand(command(dest, "fresh"));
          const next = yield* inbox.next();
          expect(labelOf(next.delivery.message)).toBe("fresh");
          yield* ack(next);
        }),
    );

    it.effect("bad requests and replies are InvalidArgument", () =>
      Effect.gen(function* () {
        yield* invalid(
          call("request", { command: { messageType: "test.Ping" }, timeout: ms(1000) }),
          "command.destination",
        );
        yield* invalid(
          call("request", {
            command: command(unique("d-"), "x"),
            timeout: ms(11 * 60_000),
          }),
          "timeout",
        );
        yield* invalid(
          call("reply", {
            inReplyTo: "some-id",
            replyTo: "not-a-reply-address",
            reply: { messageType: "test.Pong" },
          }),
          "reply_to",
        );
      }),
    );
  });

// --- Expiration -------------------------------------------------------------------------

const expirationTests = (it: It) =>
  describe("expiration", () => {
    it.scoped("a message past its expire_time is not delivered; a later one is", () =>
      Effect.gen(function* () {
        const dest = unique("expiring-");
        const expireAt = Date.now() + 1500;
        // One key: the expired message comes first in the partition the later one is in.
        yield* sendCommand(
          command(dest, "expired", { partitionKey: "k", expireTime: timestampFromMs(expireAt) }),
        );
        yield* Effect.sleep(D.millis(Math.max(0, expireAt - Date.now()) + 100));
        yield* sendCommand(command(dest, "fresh", { partitionKey: "k" }));
        const inbox = yield* makeInbox;
        yield* inbox.commands("a", dest);
        const got = yield* inbox.next();
        expect(labelOf(got.delivery.message)).toBe("fresh");
        yield* ack(got);
        yield* inbox.quiet();
      }),
    );
  });

// --- Bad input ---------------------------------------------------------------------------

const badInputTests = (it: It) =>
  describe("bad input", () => {
    it.effect("a message without type, a command without destination, an event with one", () =>
      Effect.gen(function* () {
        const dest = unique("dest-");
        yield* invalid(call("sendCommand", {}), "command");
        yield* invalid(
          call("sendCommand", { command: { destination: dest } }),
          "command.message_type",
        );
        yield* invalid(
          call("sendCommand", { command: { destination: dest, messageType: "has space" } }),
          "command.message_type",
        );
        yield* invalid(
          call("sendCommand", { command: { messageType: "test.X" } }),
          "command.destination",
        );
        yield* invalid(
          call("sendCommand", { command: { messageType: "test.X", destination: "a/b" } }),
          "command.destination",
        );
        yield* invalid(
          call("publishEvent", { event: { destination: dest } }),
          "event.message_type",
        );
        yield* invalid(
          call("publishEvent", { event: { messageType: "test.X", destination: dest } }),
          "event.destination",
        );
        yield* invalid(
          sendCommand(command(dest, "x", { expireTime: timestampFromMs(Date.now() - 1000) })),
          "command.expire_time",
        );
        yield* invalid(
          sendCommand(command(dest, "x", { headers: { ce_id: "spoofed" } })),
          'command.headers["ce_id"]',
        );
      }),
    );

    it.effect("unknown content types and invalid JSON are InvalidArgument", () =>
      Effect.gen(function* () {
        const dest = unique("dest-");
        yield* invalid(
          sendCommand(command(dest, "x", { contentType: "application/xml" })),
          "command.content_type",
        );
        yield* invalid(
          sendCommand(command(dest, "x", { payload: utf8("{not json") })),
          "command.payload",
        );
        yield* invalid(
          sendCommand(
            command(dest, "x", { contentType: "application/json", payload: utf8("[1,") }),
          ),
          "command.payload",
        );
        // The content types the bus does accept: only JSON is looked into.
        for (const contentType of [
          "application/protobuf",
          "application/octet-stream",
          "text/plain",
        ]) {
          yield* sendCommand(command(dest, "x", { contentType, payload: utf8("{opaque") }));
        }
        yield* sendCommand(command(dest, "x", { contentType: "application/json; charset=utf-8" }));
      }),
    );

    it.effect("a payload over 1 MiB is ResourceExhausted", () =>
      Effect.gen(function* () {
        const dest = unique("dest-");
        yield* failure(
          sendCommand(
            command(dest, "x", {
              contentType: "application/octet-stream",
              payload: new Uint8Array(1024 * 1024 + 1),
            }),
          ),
          "ResourceExhausted",
        );
        yield* failure(
          publishEvent({ messageType: "test.Big", payload: new Uint8Array(1024 * 1024 + 1) }),
          "ResourceExhausted",
        );
      }),
    );

    it.effect("unknown delivery ids on Ack and Nack are NotFound", () =>
      Effect.gen(function* () {
        yield* failure(call("ack", { deliveryId: randomUUID() }), "NotFound");
        yield* failure(call("nack", { deliveryId: randomUUID(), reason: "x" }), "NotFound");
        yield* invalid(call("ack", { deliveryId: "" }), "delivery_id");
        yield* invalid(call("nack", { deliveryId: "" }), "delivery_id");
        yield* invalid(
          call("nack", { deliveryId: randomUUID(), reason: "x".repeat(1001) }),
          "reason",
        );
      }),
    );

    it.effect("bad subscriptions and group names are InvalidArgument", () =>
      Effect.gen(function* () {
        const dest = unique("dest-");
        const type = unique("test.T.");
        const ok = { group: unique("g-"), eventTypes: [type] };
        for (const group of ["", "has space", "a/b", "x".repeat(201)]) {
          yield* invalid(subscribeOnce({ ...ok, group }), "group");
          yield* invalid(call("listDeadLetters", { group }), "group");
          yield* invalid(call("replayDeadLetters", { group, deadLetterIds: ["0-0"] }), "group");
        }
        // A destination's commands are consumed by the group of its name only.
        yield* invalid(subscribeOnce({ group: unique("g-"), destination: dest }), "group");
        yield* invalid(subscribeOnce({ group: unique("g-") }), "event_types");
        yield* invalid(subscribeOnce({ ...ok, eventTypes: [type, type] }), "event_types");
        yield* invalid(subscribeOnce({ ...ok, eventTypes: ["bad type"] }), "event_types[0]");
        yield* invalid(subscribeOnce({ ...ok, maxInFlight: 1001 }), "max_in_flight");
        yield* invalid(subscribeOnce({ ...ok, maxInFlight: -1 }), "max_in_flight");
        yield* invalid(subscribeOnce({ ...ok, ackDeadline: ms(999) }), "ack_deadline");
        yield* invalid(subscribeOnce({ ...ok, ackDeadline: ms(601_000) }), "ack_deadline");
        yield* invalid(subscribeOnce({ ...ok, retry: { maxRetries: 101 } }), "retry.max_retries");
        yield* invalid(
          subscribeOnce({ ...ok, retry: { interval: ms(3_600_001) } }),
          "retry.interval",
        );
        yield* invalid(call("listDeadLetters", { group: dest, pageSize: -1 }), "page_size");
      }),
    );

    it.effect("the service stays healthy after bad input", () =>
      Effect.gen(function* () {
        yield* Effect.either(call("sendCommand", {}));
        yield* Effect.either(call("ack", { deliveryId: randomUUID() }));
        yield* Effect.either(subscribeOnce({ group: "" }));
        const health = yield* HealthRegistry;
        expect(yield* health.check(MessageBusService.typeName)).toEqual(Option.some("SERVING"));
      }),
    );
  });

// --- Configured limits -------------------------------------------------------------------

// --- Consume: what only a bidirectional stream has --------------------------------------

const subscribeRequest = (req: SubscribeFields): ConsumeRequest =>
  create(ConsumeRequestSchema, { request: { case: "subscribe", value: req } });
const settleRequest = (settle: MessageInitShape<typeof ConsumeSettleSchema>): ConsumeRequest =>
  create(ConsumeRequestSchema, {
    request: { case: "settle", value: create(ConsumeSettleSchema, settle) },
  });

/**
 * A Consume stream driven by hand in the test's scope: `send` a request,
 * `next` response, `close` the request side (a half-close), and `end`: how
 * the stream ended (its error, if any).
 */
const openConsume = (first: ReadonlyArray<ConsumeRequest>) =>
  Effect.gen(function* () {
    const bus = yield* MessageBus;
    const requests = yield* Queue.unbounded<ConsumeRequest>();
    yield* Queue.offerAll(requests, first);
    const responses = yield* Queue.unbounded<ConsumeResponse>();
    const ended = yield* Deferred.make<Exit.Exit<void, MeshError>>();
    yield* bus.consume(Stream.fromQueue(requests)).pipe(
      Stream.runForEach((r) => Queue.offer(responses, create(ConsumeResponseSchema, r))),
      Effect.exit,
      Effect.flatMap((exit) => Deferred.succeed(ended, exit)),
      Effect.forkScoped,
    );
    const end = Deferred.await(ended).pipe(
      Effect.timeoutFail({
        duration: DELIVERY_WAIT,
        onTimeout: () => new Error(`the Consume stream did not end within ${DELIVERY_WAIT}`),
      }),
      Effect.orDie,
      Effect.flatten,
    );
    const next = Queue.take(responses).pipe(
      Effect.timeoutFail({
        duration: JOIN_WAIT,
        onTimeout: () => new Error(`no Consume response within ${JOIN_WAIT}`),
      }),
    );
    /** The deliveries of the next response (failing when it is not a batch of them). */
    const batch = Effect.map(next, (r) => {
      if (r.response.case !== "deliveries")
        throw new Error(`expected deliveries, got ${r.response.case}`);
      return r.response.value.deliveries;
    });
    return {
      send: (r: ConsumeRequest) => Queue.offer(requests, r),
      next,
      batch,
      close: Queue.shutdown(requests),
      end,
    };
  });

const consumeTests = (it: It) =>
  describe("Consume stream", () => {
    it.scoped("a first request that does not subscribe, or none at all, is InvalidArgument", () =>
      Effect.gen(function* () {
        const settleFirst = yield* openConsume([settleRequest({ ackIds: [randomUUID()] })]);
        yield* invalid(settleFirst.end, "subscribe");
        const empty = yield* openConsume([create(ConsumeRequestSchema, {})]);
        yield* invalid(empty.end, "subscribe");
        const nothing = yield* openConsume([]);
        yield* nothing.close;
        yield* invalid(nothing.end, "subscribe");
        const bad = yield* openConsume([subscribeRequest({ group: "bad group" })]);
        yield* invalid(bad.end, "subscribe.group", "subscribe.event_types");
      }),
    );

    it.scoped("responses carry batches, never more unsettled than max_in_flight", () =>
      Effect.gen(function* () {
        const dest = unique("batches-");
        // Sent before the group joins: all of them are ready at once.
        for (const n of range(12))
          yield* sendCommand(command(dest, `m${n}`, { partitionKey: "k" }));
        const c = yield* openConsume([
          subscribeRequest({ group: dest, destination: dest, maxInFlight: 5 }),
        ]);
        expect((yield* c.next).response.case).toBe("subscribed");
        const got: Delivery[] = [];
        while (got.length < 5) got.push(...(yield* c.batch));
        expect(got).toHaveLength(5);
        // Full: nothing more until some are settled.
        yield* Effect.sleep(QUIET);
        yield* c.send(settleRequest({ ackIds: got.map((d) => d.deliveryId) }));
        while (got.length < 10) got.push(...(yield* c.batch));
        expect(got).toHaveLength(10);
        yield* c.send(settleRequest({ ackIds: got.slice(5).map((d) => d.deliveryId) }));
        while (got.length < 12) got.push(...(yield* c.batch));
        // One key: in send order, every message once.
        expect(got.map((d) => labelOf(d.message))).toEqual(range(12).map((n) => `m${n}`));
        yield* c.send(settleRequest({ ackIds: got.slice(10).map((d) => d.deliveryId) }));
        yield* c.close;
        yield* c.end;
      }),
    );

    it.scoped(
      "an unknown id is NotFound and ends the stream; the known ones in its request are settled",
      () =>
        Effect.gen(function* () {
          const dest = unique("unknown-");
          const c = yield* openConsume([subscribeRequest({ group: dest, destination: dest })]);
          expect((yield* c.next).response.case).toBe("subscribed");
          for (const n of range(2))
            yield* sendCommand(command(dest, `m${n}`, { partitionKey: "k" }));
          const got: Delivery[] = [];
          while (got.length < 2) got.push(...(yield* c.batch));
          const stranger = randomUUID();
          yield* c.send(
            settleRequest({
              ackIds: [got[0]?.deliveryId ?? "", stranger, got[1]?.deliveryId ?? ""],
            }),
          );
          const e = yield* failure(c.end, "NotFound");
          expect(e.metadata?.delivery_id).toBe(stranger);
          // Both known ones were acknowledged: a new subscription gets only what comes next.
          const inbox = yield* makeInbox;
          yield* inbox.commands("second", dest);
          yield* sendCommand(command(dest, "m2", { partitionKey: "k" }));
          const next = yield* inbox.next();
          expect(labelOf(next.delivery.message)).toBe("m2");
          yield* ack(next);
          yield* inbox.quiet();
        }),
    );

    it.scoped("a second subscribe, or bad settlements, are InvalidArgument", () =>
      Effect.gen(function* () {
        const dest = unique("twice-");
        const req = { group: dest, destination: dest };
        const twice = yield* openConsume([subscribeRequest(req), subscribeRequest(req)]);
        yield* invalid(twice.end, "subscribe");
        const empty = yield* openConsume([subscribeRequest(req), create(ConsumeRequestSchema, {})]);
        yield* invalid(empty.end, "settle");
        const badIds = yield* openConsume([subscribeRequest(req), settleRequest({ ackIds: [""] })]);
        yield* invalid(badIds.end, "settle.ack_ids[0]");
        const tooMany = yield* openConsume([
          subscribeRequest(req),
          settleRequest({ ackIds: range(1001).map(() => randomUUID()) }),
        ]);
        yield* invalid(tooMany.end, "settle");
        const badNack = yield* openConsume([
          subscribeRequest(req),
          settleRequest({ nacks: [{ deliveryId: randomUUID(), delay: ms(3_600_001) }] }),
        ]);
        yield* invalid(badNack.end, "settle.nacks[0].delay");
      }),
    );

    it.scoped("a half-close ends the stream cleanly; what it left unsettled is redelivered", () =>
      Effect.gen(function* () {
        const dest = unique("halfclose-");
        const c = yield* openConsume([subscribeRequest({ group: dest, destination: dest })]);
        expect((yield* c.next).response.case).toBe("subscribed");
        yield* sendCommand(command(dest, "left"));
        const [first] = yield* c.batch;
        yield* c.close;
        yield* c.end;
        const inbox = yield* makeInbox;
        yield* inbox.commands("second", dest);
        const again = yield* inbox.next();
        // From the log again (its group had no member left), so as a first delivery.
        expect(idOf(again)).toBe(first?.message?.messageId);
        yield* ack(again);
      }),
    );

    it.scoped("an ack after the ack deadline is skipped, not an error: the stream goes on", () =>
      Effect.gen(function* () {
        const dest = unique("late-");
        const c = yield* openConsume([
          subscribeRequest({
            group: dest,
            destination: dest,
            ackDeadline: ms(1000),
            retry: FAST_RETRY,
          }),
        ]);
        expect((yield* c.next).response.case).toBe("subscribed");
        yield* sendCommand(command(dest, "slow"));
        const [first] = yield* c.batch;
        // Redelivered once the deadline passed; the late ack of the first delivery is skipped.
        const [again] = yield* c.batch;
        expect(again?.attempt).toBe(2);
        yield* c.send(settleRequest({ ackIds: [first?.deliveryId ?? ""] }));
        yield* c.send(settleRequest({ ackIds: [again?.deliveryId ?? ""] }));
        yield* sendCommand(command(dest, "after"));
        const [after] = yield* c.batch;
        expect(labelOf(after?.message)).toBe("after");
        yield* c.send(settleRequest({ ackIds: [after?.deliveryId ?? ""] }));
        yield* c.close;
        yield* c.end;
      }),
    );
  });

const LIMITS = { maxPayloadBytes: 1024, maxSubscriptionsPerClient: 2 };

const limitTests = (it: It) => {
  it.effect("payloads up to the configured limit pass; one byte more is ResourceExhausted", () =>
    Effect.gen(function* () {
      const dest = unique("dest-");
      const sized = (n: number) => command(dest, "x", { payload: utf8(`"${"a".repeat(n - 2)}"`) });
      yield* sendCommand(sized(LIMITS.maxPayloadBytes));
      yield* failure(sendCommand(sized(LIMITS.maxPayloadBytes + 1)), "ResourceExhausted");
    }),
  );

  it.scoped("a client holds at most the configured subscriptions; closing one frees its slot", () =>
    Effect.gen(function* () {
      const [client, other] = [unique("client-"), unique("client-")];
      const as = (who: string) => Effect.locally(CurrentClient, who);
      const inbox = yield* makeInbox;
      const req = () => ({ group: unique("g-"), eventTypes: [unique("test.T.")] });
      const first = yield* as(client)(inbox.subscribe("1", req()));
      yield* as(client)(inbox.subscribe("2", req()));
      const refused = yield* failure(as(client)(subscribeOnce(req())), "ResourceExhausted");
      expect(refused.message).toMatch(/subscriptions/);
      // Another client is not affected.
      yield* as(other)(inbox.subscribe("3", req()));
      yield* first.close;
      yield* as(client)(inbox.subscribe("4", req()));
      yield* failure(as(client)(subscribeOnce(req())), "ResourceExhausted");
    }),
  );
};

// --- At least once ------------------------------------------------------------------------

/** A small deterministic generator (mulberry32): the same nacks on every run. */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

/**
 * The at-least-once count: 10,000 keyed messages (50 keys, 3 partitions) to
 * one group of two subscriptions. Each member works on up to its
 * max_in_flight (8) deliveries at once, settling each after 1-4 ms, and
 * nacks ~5 % of them; one member goes away midway (its unsettled work
 * abandoned, as a crashed client's). Every message is acknowledged, none is
 * lost, no member ever holds more than 8 unsettled deliveries, and per key
 * the first deliveries come in send order.
 */
export const atLeastOnceTests = (it: It) =>
  it.scoped(
    "10,000 keyed messages, two members, random nacks, one member leaving: every one acked, first deliveries in key order",
    () =>
      Effect.gen(function* () {
        const n = 10_000;
        const keys = 50;
        const maxInFlight = 8;
        const dest = unique("alo-");
        const keyOf = (i: number) => `key-${i % keys}`;
        const rng = random(5);
        const order = firstDeliveryOrder();
        const acked = new Set<number>();
        const errors: string[] = [];
        const stats = { nacks: 0, afterClose: 0 };
        const members = {
          a: { first: 0, unsettled: 0, most: 0, work: yield* Scope.make() },
          b: { first: 0, unsettled: 0, most: 0, work: yield* Scope.make() },
        };
        const allAcked = yield* Deferred.make<void>();
        const halfway = yield* Deferred.make<void>();
        let closed = false;

        /** Settles one delivery: nack (~5 %) or ack, recording the outcome. */
        const settle = (sub: "a" | "b", d: Delivery, via: Settler, i: number) => {
          const failed = (what: string) => (e: { readonly message: string }) =>
            Effect.sync(() => errors.push(`${what} ${i} (${sub}): ${e.message}`));
          const done = Effect.sync(() => {
            members[sub].unsettled--;
          });
          const outcome: Effect.Effect<unknown, never, MessageBus> =
            rng() < 0.05
              ? via.nack(d.deliveryId, "random").pipe(
                  Effect.tap(() => {
                    stats.nacks++;
                  }),
                  Effect.catchAll(failed("nack")),
                )
              : via.ack(d.deliveryId).pipe(
                  Effect.flatMap(() => {
                    acked.add(i);
                    return Effect.all([
                      acked.size >= n / 2 ? Deferred.succeed(halfway, undefined) : Effect.void,
                      acked.size === n ? Deferred.succeed(allAcked, undefined) : Effect.void,
                    ]);
                  }),
                  Effect.catchAll(failed("ack")),
                );
          // Once the call started, its outcome is recorded even if the member is closing.
          return Effect.sleep(D.millis(1 + rng() * 3)).pipe(
            Effect.zipRight(Effect.uninterruptible(Effect.zipRight(outcome, done))),
          );
        };

        /** Records the delivery at once (arrival order), then settles it in the background. */
        const handle =
          (sub: "a" | "b") =>
          (d: Delivery, via: Settler): Effect.Effect<void, never, MessageBus> =>
            Effect.suspend(() => {
              const member = members[sub];
              const i = Number(d.message?.messageId.slice(dest.length + 1));
              if (order.delivered(keyOf(i), i)) member.first++;
              if (closed) stats.afterClose++;
              member.unsettled++;
              member.most = Math.max(member.most, member.unsettled);
              return Effect.asVoid(Effect.forkIn(settle(sub, d, via, i), member.work));
            });

        const settings = (): SubscribeFields => ({
          group: dest,
          destination: dest,
          maxInFlight,
          retry: { maxRetries: 100, interval: ms(100) },
        });
        const broken = yield* Deferred.make<never, Error>();
        const onEnd = (e: Error) => Deferred.fail(broken, e).pipe(Effect.asVoid);
        /** Batches of 500, in index order. */
        const publish = (batches: ReadonlyArray<number>) =>
          Effect.forEach(batches, (batch) =>
            call("publishBatch", {
              messages: range(500).map((j) => {
                const i = batch * 500 + j;
                return {
                  messageId: `${dest}-${i}`,
                  messageType: "test.Counted",
                  kind: MessageKind.COMMAND,
                  destination: dest,
                  partitionKey: keyOf(i),
                  payload: json({ i }),
                };
              }),
            }),
          );
        const batches = range(n / 500);
        // Half is waiting when the group joins, the rest is sent while it consumes.
        yield* publish(batches.slice(0, batches.length / 2));
        const a = yield* consume(settings(), handle("a"), onEnd);
        yield* consume(settings(), handle("b"), onEnd);
        yield* publish(batches.slice(batches.length / 2)).pipe(
          Effect.catchAll((e) => onEnd(new Error(`publishing failed: ${e.message}`))),
          Effect.forkScoped,
        );

        const waitFor = (what: string, done: Deferred.Deferred<void>) =>
          Effect.raceFirst(Deferred.await(done), Deferred.await(broken)).pipe(
            Effect.timeoutFail({
              duration: "90 seconds",
              onTimeout: () =>
                new Error(
                  `${what}: not within 90 s (${acked.size} of ${n} acked, ${order.seen.size} delivered, errors: ${errors.slice(0, 5).join("; ")})`,
                ),
            }),
          );
        yield* waitFor("half of the messages acked", halfway);
        // Member a goes away: its unsettled deliveries are abandoned, then its stream closes.
        yield* Scope.close(members.a.work, Exit.void);
        closed = true;
        yield* a.close;
        yield* waitFor("every message acked", allAcked);
        yield* Scope.close(members.b.work, Exit.void);

        expect(errors).toEqual([]);
        expect(acked.size).toBe(n);
        expect(order.seen.size).toBe(n);
        expect(order.outOfOrder()).toEqual([]);
        expect(stats.nacks).toBeGreaterThan(0);
        expect(members.a.first).toBeGreaterThan(0);
        expect(members.b.first).toBeGreaterThan(0);
        expect(stats.afterClose).toBeGreaterThan(0);
        expect(members.a.most).toBeLessThanOrEqual(maxInFlight);
        expect(members.b.most).toBeLessThanOrEqual(maxInFlight);
      }),
    120_000,
  );

// --- The suite --------------------------------------------------------------------------

/**
 * The MessageBus conformance suite on a log backend, once per consumer shape
 * (all three unless told). `makeLog` is called once per layer the suite
 * builds (three per shape).
 */
export const messageBusConformance = (
  name: string,
  makeLog: () => Layer.Layer<MessageLog, unknown>,
  shapes: ReadonlyArray<Shape> = ["subscribe", "subscribe-batched", "consume"],
): void => {
  for (const shape of shapes) {
    const on = <E>(bus: Layer.Layer<MessageBus | HealthRegistry | MessageLog, E>) =>
      Layer.merge(bus, Layer.succeed(ConsumerShape, shape));
    describe(`${name}, ${shape}`, { timeout: 60_000 }, () => {
      // Live services: deadlines, retries and expiry run on the real clock.
      layer(on(messageBusLayer(makeLog())), { excludeTestServices: true, timeout: "60 seconds" })(
        (it) => {
          routingTests(it);
          groupTests(it);
          ackTests(it);
          deadLetterTests(it);
          requestTests(it);
          expirationTests(it);
          badInputTests(it);
          if (shape === "consume") consumeTests(it);
        },
      );
      layer(on(messageBusLayer(makeLog(), LIMITS)), {
        excludeTestServices: true,
        timeout: "60 seconds",
      })("with a 1 KiB payload limit and 2 subscriptions per client", limitTests);
      layer(on(messageBusLayer(makeLog())), {
        excludeTestServices: true,
        timeout: "60 seconds",
      })("at least once", atLeastOnceTests);
    });
  }
};
