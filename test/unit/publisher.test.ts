/**
 * Shared appends of the publisher (src/messaging/publisher.ts): concurrent
 * publishes gather while an append is in progress and go in one, each
 * caller gets its own receipts or the batch's error, order per key is the
 * order of arrival, and a linger of 0 appends every call at once.
 *
 * The log is the embedded one behind a valve: each append is recorded and
 * waits until the test lets it through (or fails it, as a broker refusing a
 * produce request would), so a test decides what is in progress when.
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "@effect/vitest";
import { Deferred, Effect, Exit, Fiber, FiberId, Layer } from "effect";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { MessageKind } from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { Unavailable } from "../../src/common/errors.js";
import { EmbeddedMessageLog } from "../../src/messaging/embedded.js";
import { MessageLog, type OutRecord, StoreUnavailable } from "../../src/messaging/log.js";
import { MessageBus } from "../../src/messaging/MessageBus.js";
import { meshErrorToConnect } from "../../src/server/errors.js";
import { messageBusLayer } from "../support/messaging.js";
import { portCaller } from "../support/port.js";

const { call } = portCaller(MessageBusService, MessageBus);

/** One append that reached the log, held until the test settles it. */
interface Held {
  readonly records: ReadonlyArray<OutRecord>;
  /** Lets it through to the embedded log (true) or fails it as the broker would (false). */
  readonly release: (pass: boolean) => Effect.Effect<void>;
}

/** The embedded log whose appends are handed to the test one by one. */
const valve = () => {
  const appends: Held[] = [];
  let arrived = Deferred.unsafeMake<void>(FiberId.none);
  const layer = Layer.effect(
    MessageLog,
    Effect.map(MessageLog, (inner) => ({
      ...inner,
      append: (records: ReadonlyArray<OutRecord>) =>
        Effect.gen(function* () {
          const gate = yield* Deferred.make<boolean>();
          appends.push({ records, release: (pass) => Deferred.succeed(gate, pass) });
          yield* Deferred.succeed(arrived, undefined);
          if (yield* Deferred.await(gate)) return yield* inner.append(records);
          return yield* new StoreUnavailable({
            cause: new Error("NOT_ENOUGH_REPLICAS (refused by the test)"),
          });
        }),
    })),
  ).pipe(Layer.provide(EmbeddedMessageLog.layer()));
  /** The `n`-th append (from 0), once it has reached the log. */
  const nth = (n: number): Effect.Effect<Held> =>
    Effect.suspend(() => {
      const held = appends[n];
      if (held) return Effect.succeed(held);
      const next = arrived;
      return Deferred.await(next).pipe(
        Effect.zipRight(
          Effect.sync(() => {
            if (arrived === next) arrived = Deferred.unsafeMake<void>(FiberId.none);
          }),
        ),
        Effect.zipRight(nth(n)),
      );
    });
  return { layer, appends, nth };
};

const event = (type: string, label: string, partitionKey = "") => ({
  messageType: type,
  partitionKey,
  contentType: "text/plain",
  payload: new TextEncoder().encode(label),
});

const publish = (type: string, label: string, partitionKey = "") =>
  call("publishEvent", { event: event(type, label, partitionKey) });

/** Forks `n` publishes in order, each reaching the publisher before the next starts. */
const forkPublishes = (n: number, type: string, key = "") =>
  Effect.forEach(
    Array.from({ length: n }, (_, i) => i),
    (i) => Effect.fork(publish(type, `m${i}`, key)).pipe(Effect.tap(() => Effect.yieldNow())),
  );

const labels = (records: ReadonlyArray<OutRecord>) =>
  records.map((r) => new TextDecoder().decode(r.value));

const bus = (lingerMs: number) => {
  const v = valve();
  return { ...v, layer: messageBusLayer(v.layer, { publishLingerMs: lingerMs }) };
};

describe("publisher: shared appends", () => {
  it.scoped("concurrent publishes gather while an append is in progress, then go in one", () => {
    const v = bus(60_000);
    return Effect.gen(function* () {
      // An idle bus sends at once.
      const first = yield* Effect.fork(publish("test.Shared", "first"));
      const held = yield* v.nth(0);
      expect(labels(held.records)).toEqual(["first"]);
      const rest = yield* forkPublishes(5, "test.Shared");
      yield* held.release(true);
      yield* Fiber.join(first);
      // The others gathered behind it and went together once it was answered.
      const second = yield* v.nth(1);
      expect(labels(second.records)).toEqual(["m0", "m1", "m2", "m3", "m4"]);
      yield* second.release(true);
      const receipts = yield* Effect.forEach(rest, Fiber.join);
      const ids = second.records.map((r) => r.headers.ce_id);
      expect(receipts.map((r) => r.receipt?.messageId)).toEqual(ids);
      const offsets = receipts.map((r) => `${r.receipt?.partition}/${r.receipt?.offset}`);
      expect(new Set(offsets).size).toBe(5);
      expect(v.appends).toHaveLength(2);
    }).pipe(Effect.provide(v.layer));
  });

  it.scoped(
    "a failed append fails every caller of its batch with UNAVAILABLE, and only them",
    () => {
      const v = bus(60_000);
      return Effect.gen(function* () {
        const first = yield* Effect.fork(publish("test.Failing", "first"));
        const held = yield* v.nth(0);
        const batch = yield* forkPublishes(3, "test.Failing");
        yield* held.release(true);
        const refused = yield* v.nth(1);
        expect(refused.records).toHaveLength(3);
        yield* refused.release(false);
        const exits = yield* Effect.forEach(batch, Fiber.await);
        for (const exit of exits) {
          expect(Exit.isFailure(exit)).toBe(true);
          if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
            const error = exit.cause.error;
            expect(error).toBeInstanceOf(Unavailable);
            expect(meshErrorToConnect(error).code).toBe(Code.Unavailable);
          } else expect.fail(`expected a failure with Unavailable, got ${String(exit)}`);
        }
        // The caller of the earlier batch got its receipt.
        expect((yield* Fiber.join(first)).receipt?.duplicate).toBe(false);
        // A failed message's id is forgotten: the same id goes again, not as a duplicate.
        const id = refused.records[0]?.headers.ce_id ?? "";
        const again = yield* Effect.fork(
          call("publishEvent", { event: { ...event("test.Failing", "again"), messageId: id } }),
        );
        yield* (yield* v.nth(2)).release(true);
        const receipt = (yield* Fiber.join(again)).receipt;
        expect(receipt?.messageId).toBe(id);
        expect(receipt?.duplicate).toBe(false);
      }).pipe(Effect.provide(v.layer));
    },
  );

  it.scoped("per key, messages are stored in the order they reached the publisher", () => {
    const v = bus(60_000);
    return Effect.gen(function* () {
      const first = yield* Effect.fork(publish("test.Ordered", "first", "k"));
      const held = yield* v.nth(0);
      const fibers = yield* forkPublishes(20, "test.Ordered", "k");
      yield* held.release(true);
      yield* Fiber.join(first);
      yield* (yield* v.nth(1)).release(true);
      const receipts = yield* Effect.forEach(fibers, Fiber.join);
      const partitions = new Set(receipts.map((r) => r.receipt?.partition));
      expect(partitions.size).toBe(1);
      const offsets = receipts.map((r) => Number(r.receipt?.offset));
      expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
      expect(new Set(offsets).size).toBe(20);
      // And a PublishBatch keeps its own order, in one append.
      const { receipts: batch } = yield* Effect.fork(
        call("publishBatch", {
          messages: Array.from({ length: 10 }, (_, i) => ({
            ...event("test.Ordered", `b${i}`, "k"),
            kind: MessageKind.EVENT,
          })),
        }),
      ).pipe(
        Effect.tap(() => v.nth(2).pipe(Effect.flatMap((h) => h.release(true)))),
        Effect.flatMap(Fiber.join),
      );
      const batchOffsets = batch.map((r) => Number(r.offset));
      expect(batchOffsets).toEqual([...batchOffsets].sort((a, b) => a - b));
      expect(Math.min(...batchOffsets)).toBeGreaterThan(Math.max(...offsets));
    }).pipe(Effect.provide(v.layer));
  });

  it.scoped("with a linger of 0, each publish is appended at once, on its own", () => {
    const v = bus(0);
    return Effect.gen(function* () {
      const fibers = yield* forkPublishes(3, "test.NoLinger");
      // All three reached the log while none was answered.
      const held = yield* Effect.forEach([0, 1, 2], v.nth);
      expect(held.map((h) => labels(h.records))).toEqual([["m0"], ["m1"], ["m2"]]);
      yield* Effect.forEach(held, (h) => h.release(true));
      const receipts = yield* Effect.forEach(fibers, Fiber.join);
      expect(receipts.every((r) => r.receipt?.duplicate === false)).toBe(true);
    }).pipe(Effect.provide(v.layer));
  });

  it.scoped("a batch waits no longer than the linger for an append in progress", () => {
    const v = bus(20);
    return Effect.gen(function* () {
      const first = yield* Effect.fork(publish("test.Lingering", "first"));
      const held = yield* v.nth(0);
      const second = yield* Effect.fork(publish("test.Lingering", "second"));
      // Sent while the first is still held: the linger passed.
      const next = yield* v.nth(1);
      expect(labels(next.records)).toEqual(["second"]);
      yield* next.release(true);
      yield* held.release(true);
      yield* Fiber.join(second);
      yield* Fiber.join(first);
    }).pipe(Effect.provide(v.layer));
  });

  it.scoped("a message id sent again while its batch is in progress waits for that batch", () => {
    const v = bus(60_000);
    return Effect.gen(function* () {
      const original = { ...event("test.Twice", "once"), messageId: "twice-1" };
      const first = yield* Effect.fork(call("publishEvent", { event: original }));
      const held = yield* v.nth(0);
      const again = yield* Effect.fork(call("publishEvent", { event: original }));
      yield* Effect.yieldNow();
      yield* held.release(true);
      const [a, b] = [(yield* Fiber.join(first)).receipt, (yield* Fiber.join(again)).receipt];
      expect(b?.duplicate).toBe(true);
      expect(b?.offset).toBe(a?.offset);
      expect(v.appends).toHaveLength(1);
    }).pipe(Effect.provide(v.layer));
  });
});
