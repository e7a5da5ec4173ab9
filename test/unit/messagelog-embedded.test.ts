import { describe, expect, it } from "@effect/vitest";
import {
  Chunk,
  Context,
  Deferred,
  Effect,
  Exit,
  Layer,
  Logger,
  LogLevel,
  Queue,
  Scope,
  SubscriptionRef,
  TestClock,
  TestContext,
} from "effect";
import { EmbeddedMessageLog } from "../../src/messaging/embedded.js";
import {
  type ConsumeOptions,
  type LogRecord,
  MessageLog,
  type MessageLogShape,
  type OutRecord,
  type Position,
  type TopicPartition,
} from "../../src/messaging/log.js";
import { messageLogConformance } from "../conformance/messagelog.suite.js";

messageLogConformance("embedded", () => EmbeddedMessageLog.layer());

type Options = Parameters<typeof EmbeddedMessageLog.layer>[0];

/**
 * Runs `f` on a fresh log built under a TestClock of its own (the tests
 * are `live`, with the TestContext provided here: the conformance suite's
 * `layer(...)` replaces `it.effect` and `it.scoped` of the whole file by
 * versions without test services). The log closes when `f` completes.
 */
const withLog = <A, E, R>(f: (log: MessageLogShape) => Effect.Effect<A, E, R>, options?: Options) =>
  Effect.flatMap(MessageLog, f).pipe(
    Effect.provide(EmbeddedMessageLog.layer(options)),
    Effect.provide(TestContext.TestContext),
  );

const record = (topic: string, value: string, key?: string): OutRecord => ({
  topic,
  key,
  value: new TextEncoder().encode(value),
  headers: {},
});

const textOf = (r: LogRecord) => new TextDecoder().decode(r.value);
const range = (n: number) => Array.from({ length: n }, (_, i) => i);
/** Lets forked fibers (the sweeper) run what the clock just woke. */
const settle = Effect.repeatN(Effect.yieldNow(), 10);

const offsetsOf = (positions: ReadonlyArray<Position>) => positions.map((p) => p.offset);

/** A member of `group` on `topics`, queueing what it is handed. */
const join = (
  log: MessageLogShape,
  options: Partial<ConsumeOptions> & Pick<ConsumeOptions, "group">,
  onRecord: (r: LogRecord) => Effect.Effect<void> = () => Effect.void,
) =>
  Effect.gen(function* () {
    const records = yield* Queue.unbounded<LogRecord>();
    const assignment = yield* SubscriptionRef.make<ReadonlyArray<TopicPartition>>([]);
    const consumer = yield* log.consume(
      { topics: ["t"], fromBeginning: true, ...options },
      {
        onRecord: (r) => Effect.zipRight(Queue.offer(records, r), onRecord(r)),
        onAssigned: (tps) => SubscriptionRef.set(assignment, tps),
      },
    );
    const assigned = Effect.map(SubscriptionRef.get(assignment), (tps) =>
      tps.map((tp) => `${tp.topic}/${tp.partition}`),
    );
    const take = (n: number) => Effect.map(Queue.takeN(records, n), Chunk.toArray);
    return { consumer, records, assigned, take };
  });

describe("embedded MessageLog", () => {
  it.scopedLive(
    "records expire at retentionMs, to the millisecond; offsets keep counting; reading below the earliest starts there",
    () =>
      withLog(
        (log) =>
          Effect.gen(function* () {
            const [first] = yield* log.append([record("t", "r0", "k")]);
            const partition = first?.partition ?? -1;
            yield* TestClock.adjust(500);
            yield* log.append([record("t", "r1", "k")]);
            yield* TestClock.adjust(499); // 999
            expect((yield* log.read("t", {}, 10)).records.map(textOf)).toEqual(["r0", "r1"]);

            // A member commits r0 (its next offset: 1, r1's).
            yield* Effect.scoped(
              Effect.gen(function* () {
                const m = yield* join(log, { group: "committed" });
                yield* m.take(1);
                yield* m.consumer.commit([{ topic: "t", partition, offset: 1 }]);
              }),
            );

            yield* TestClock.adjust(1); // 1000: r0 is gone
            expect((yield* log.read("t", {}, 10)).records.map((r) => r.offset)).toEqual([1]);
            expect(offsetsOf(yield* log.append([record("t", "r2", "k")]))).toEqual([2]);
            const below = yield* log.read("t", { [partition]: 0 }, 10);
            expect(below.records.map(textOf)).toEqual(["r1", "r2"]);

            const fresh = yield* join(log, { group: "fresh" });
            expect((yield* fresh.take(2)).map(textOf)).toEqual(["r1", "r2"]);

            // A committed offset that is no longer retained reads from the earliest.
            yield* TestClock.adjust(500); // 1500: r1 is gone
            const resumed = yield* join(log, { group: "committed" });
            expect((yield* resumed.take(1)).map(textOf)).toEqual(["r2"]);
            expect(yield* Queue.size(resumed.records)).toBe(0);
          }),
        { retentionMs: 1_000, sweepInterval: "1 hour" },
      ),
  );

  it.live("a partition keeps its newest maxRecordsPerPartition records", () =>
    withLog(
      (log) =>
        Effect.gen(function* () {
          const positions = yield* log.append(range(5).map((i) => record("t", `r${i}`, "k")));
          expect(offsetsOf(positions)).toEqual(range(5));
          expect(offsetsOf((yield* log.read("t", {}, 100)).records)).toEqual([2, 3, 4]);
          // Long enough for trimmed records to be dropped from memory (several times).
          for (let i = 5; i < 5_000; i++) yield* log.append([record("t", `r${i}`, "k")]);
          const page = yield* log.read("t", {}, 100);
          expect(offsetsOf(page.records)).toEqual([4_997, 4_998, 4_999]);
          expect(page.records.map(textOf)).toEqual(["r4997", "r4998", "r4999"]);
        }),
      { maxRecordsPerPartition: 3 },
    ),
  );

  it.scopedLive("a group nobody has been in for retentionMs is forgotten, with its offsets", () =>
    withLog(
      (log) =>
        Effect.gen(function* () {
          yield* log.append([record("t", "r0", "k")]);
          yield* Effect.scoped(
            Effect.gen(function* () {
              const m = yield* join(log, { group: "g" });
              const [r0] = yield* m.take(1);
              yield* m.consumer.commit([{ topic: "t", partition: r0?.partition ?? -1, offset: 1 }]);
            }),
          );
          yield* TestClock.adjust(999);
          yield* log.append([record("t", "r1", "k")]);
          yield* TestClock.adjust(1); // the sweeper forgets the group
          yield* settle;
          // From the end: the committed offset (1) would have handed r1 over first.
          const m = yield* join(log, { group: "g", fromBeginning: false });
          yield* log.append([record("t", "r2", "k")]);
          expect((yield* m.take(1)).map(textOf)).toEqual(["r2"]);
        }),
      { retentionMs: 1_000, sweepInterval: "100 millis" },
    ),
  );

  it.live(
    "a topic appended to without ensureTopics is created with the configured partitions; keyless records go round-robin",
    () =>
      withLog(
        (log) =>
          Effect.gen(function* () {
            const positions = yield* log.append(range(8).map((i) => record("new", `u${i}`)));
            expect(positions.map((p) => p.partition)).toEqual([0, 1, 2, 3, 0, 1, 2, 3]);
            expect(offsetsOf(positions)).toEqual([0, 0, 0, 0, 1, 1, 1, 1]);
          }),
        { partitions: 4 },
      ),
  );

  it.live("a key's partition depends only on the key and the partition count", () =>
    Effect.gen(function* () {
      const keys = range(100).map((i) => `key-${i}`);
      const partitionsOf = withLog((log) =>
        Effect.map(log.append(keys.map((k) => record("t", k, k))), (positions) =>
          positions.map((p) => p.partition),
        ),
      );
      const first = yield* partitionsOf;
      expect(yield* partitionsOf).toEqual(first);
      expect(new Set(first)).toEqual(new Set([0, 1, 2]));
    }),
  );

  it.scopedLive(
    "partitions are dealt in join order; a commit for a partition the member lost is ignored",
    () =>
      withLog(
        (log) =>
          Effect.gen(function* () {
            // Keyless: r0 → 0, r1 → 1, r2 → 0, r3 → 1.
            yield* log.append(range(4).map((i) => record("t", `r${i}`)));
            const a = yield* join(log, { group: "g" });
            expect(yield* a.assigned).toEqual(["t/0", "t/1"]);
            expect((yield* a.take(4)).length).toBe(4);
            yield* a.consumer.commit([
              { topic: "t", partition: 0, offset: 2 },
              { topic: "t", partition: 1, offset: 2 },
            ]);

            const scopeB = yield* Scope.make();
            const b = yield* Scope.extend(join(log, { group: "g" }), scopeB);
            expect(yield* a.assigned).toEqual(["t/0"]);
            expect(yield* b.assigned).toEqual(["t/1"]);
            // Not A's any more: ignored (else A would re-read r1 and r3 below).
            yield* a.consumer.commit([{ topic: "t", partition: 1, offset: 0 }]);
            yield* log.append([record("t", "r4"), record("t", "r5")]);
            expect((yield* a.take(1)).map(textOf)).toEqual(["r4"]);
            expect((yield* b.take(1)).map(textOf)).toEqual(["r5"]);
            yield* a.consumer.commit([{ topic: "t", partition: 0, offset: 3 }]);

            yield* Scope.close(scopeB, Exit.void);
            expect(yield* a.assigned).toEqual(["t/0", "t/1"]);
            yield* log.append([record("t", "r6"), record("t", "r7")]);
            const again = yield* a.take(3);
            expect(again.filter((r) => r.partition === 1).map(textOf)).toEqual(["r5", "r7"]);
            expect(again.filter((r) => r.partition === 0).map(textOf)).toEqual(["r6"]);
          }),
        { partitions: 2 },
      ),
  );

  it.scopedLive(
    "a rebalance interrupts an onRecord in flight; the partition's new owner gets the record",
    () =>
      withLog(
        (log) =>
          Effect.gen(function* () {
            const interrupted = yield* Deferred.make<void>();
            yield* log.append([record("t", "r0"), record("t", "r1")]); // partitions 0 and 1
            const a = yield* join(log, { group: "g" }, (r) =>
              r.partition === 1
                ? Effect.onInterrupt(Effect.never, () => Deferred.succeed(interrupted, undefined))
                : Effect.void,
            );
            expect((yield* a.take(2)).map(textOf).sort()).toEqual(["r0", "r1"]);
            const b = yield* join(log, { group: "g" });
            yield* Deferred.await(interrupted);
            expect(yield* a.assigned).toEqual(["t/0"]);
            expect((yield* b.take(1)).map(textOf)).toEqual(["r1"]);
          }),
        { partitions: 2 },
      ),
  );

  it.scopedLive("a record whose onRecord died is handed over again", () =>
    Effect.gen(function* () {
      const log = Context.get(yield* Layer.build(EmbeddedMessageLog.layer()), MessageLog);
      yield* log.append([record("t", "r0", "k"), record("t", "r1", "k")]);
      let calls = 0;
      const m = yield* join(log, { group: "g" }, () =>
        calls++ === 0 ? Effect.dieMessage("boom") : Effect.void,
      );
      expect((yield* m.take(3)).map(textOf)).toEqual(["r0", "r0", "r1"]);
    }).pipe(Effect.provide(Logger.minimumLogLevel(LogLevel.None))),
  );

  it.scopedLive(
    "once the layer is closed, every call fails with StoreUnavailable and reading stops",
    () =>
      Effect.gen(function* () {
        const consumerScope = yield* Scope.make();
        const interrupted = yield* Deferred.make<void>();
        const { log, consumer } = yield* Effect.scoped(
          Effect.gen(function* () {
            const log = Context.get(yield* Layer.build(EmbeddedMessageLog.layer()), MessageLog);
            yield* log.append([record("t", "r0", "k")]);
            const m = yield* Scope.extend(
              join(log, { group: "g" }, () =>
                Effect.onInterrupt(Effect.never, () => Deferred.succeed(interrupted, undefined)),
              ),
              consumerScope,
            );
            yield* m.take(1);
            return { log, consumer: m.consumer };
          }),
        );
        expect(yield* Deferred.isDone(interrupted)).toBe(true);
        for (const failed of [
          log.ping,
          log.ensureTopics(["t"]),
          log.append([record("t", "r1")]),
          log.read("t", {}, 10),
          consumer.commit([{ topic: "t", partition: 0, offset: 1 }]),
          Effect.scoped(join(log, { group: "h" })),
        ]) {
          const error = yield* Effect.flip(failed);
          expect(error._tag).toBe("StoreUnavailable");
        }
        yield* Scope.close(consumerScope, Exit.void);
      }),
  );
});
