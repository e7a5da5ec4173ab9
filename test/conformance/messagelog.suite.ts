/**
 * The MessageLog contract, run unchanged against every backend (embedded,
 * Kafka). Real time throughout. Every test works on topics and groups of its
 * own (random names), so runs can share one broker, and puts the records
 * whose order matters under one key (one partition, so one order). Waits
 * are bounded by deadlines, generous where a group is (re)assigned (Kafka
 * rebalances take seconds); no test asserts how long anything took. The only
 * fixed wait is where a record must NOT come (back-pressure).
 *
 * The log under test must give its topics at least 2 partitions (both
 * adapters default to 3): the tests learn the count from the assignment of a
 * group's sole member.
 */
import { expect, layer } from "@effect/vitest";
import {
  Chunk,
  Clock,
  Deferred,
  Effect,
  Exit,
  type Layer,
  Queue,
  Schedule,
  Scope,
  SubscriptionRef,
} from "effect";
import {
  type ConsumeOptions,
  type Consumer,
  type LogRecord,
  MessageLog,
  type OutRecord,
  type Position,
  type TopicPage,
  type TopicPartition,
} from "../../src/messaging/log.js";

const unique = (label: string): string => `${label}-${Math.random().toString(36).slice(2, 12)}`;

/** For a member to join or a group to settle after a join or leave (Kafka: a rebalance). */
const ASSIGNMENT_WITHIN_MS = 20_000;
/** For records already appended to be handed over. */
const RECORDS_WITHIN_MS = 10_000;
/** How long a record that must not be handed over yet is watched for. */
const QUIET_MS = 1_000;
/** For the tests where members join and leave (several rebalances on Kafka). */
const GROUP_TEST_MS = 90_000;

const within =
  (label: string, ms: number) =>
  <A, E, R>(self: Effect.Effect<A, E, R>) =>
    Effect.timeoutFail(self, {
      duration: ms,
      onTimeout: () => new Error(`${label}: not within ${ms} ms`),
    });

/** Repeats `check` every 100 ms until it is true; fails after `withinMs`. */
const eventually = <E, R>(label: string, withinMs: number, check: Effect.Effect<boolean, E, R>) =>
  check.pipe(
    Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (done) => done }),
    within(label, withinMs),
  );

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A record whose value (and `ce_id` header) is `value`. */
const out = (topic: string, value: string, key?: string): OutRecord => ({
  topic,
  key,
  value: encoder.encode(value),
  headers: { ce_id: value, ce_source: "conformance" },
});

const textOf = (r: LogRecord): string => decoder.decode(r.value);
const textsOf = (records: ReadonlyArray<LogRecord>): string[] => records.map(textOf);

const tpKey = (tp: TopicPartition): string => `${tp.topic}/${tp.partition}`;
const at = (p: Position): string => `${tpKey(p)}@${p.offset}`;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** Offsets per partition, in the order given: what a reader of those positions must see. */
const byPartition = (positions: ReadonlyArray<Position>): Record<string, number[]> => {
  const result: Record<string, number[]> = {};
  for (const p of positions) {
    const key = tpKey(p);
    result[key] = [...(result[key] ?? []), p.offset];
  }
  return result;
};

const sortedKeys = (tps: ReadonlyArray<TopicPartition>): string[] => tps.map(tpKey).sort();

/** A group member keeping what it is handed, and its latest assignment. */
interface Member {
  readonly consumer: Consumer;
  readonly records: Queue.Queue<LogRecord>;
  readonly assignment: SubscriptionRef.SubscriptionRef<ReadonlyArray<TopicPartition>>;
}

/** Joins a group; `onRecord` runs after the record is queued (so the test sees it handed over). */
const join = (
  options: ConsumeOptions,
  onRecord: (record: LogRecord) => Effect.Effect<void> = () => Effect.void,
) =>
  Effect.gen(function* () {
    const log = yield* MessageLog;
    const records = yield* Queue.unbounded<LogRecord>();
    const assignment = yield* SubscriptionRef.make<ReadonlyArray<TopicPartition>>([]);
    const consumer = yield* log
      .consume(options, {
        onRecord: (record) => Effect.zipRight(Queue.offer(records, record), onRecord(record)),
        onAssigned: (tps) => SubscriptionRef.set(assignment, tps),
      })
      .pipe(within(`${options.group} joining`, ASSIGNMENT_WITHIN_MS));
    return { consumer, records, assignment } satisfies Member;
  });

/** The next `n` records handed to `member`. */
const take = (member: Member, n: number) =>
  Queue.takeN(member.records, n).pipe(
    Effect.map(Chunk.toArray),
    within(`${n} records`, RECORDS_WITHIN_MS),
  );

const assignmentOf = (member: Member) =>
  Effect.map(SubscriptionRef.get(member.assignment), sortedKeys);

/** The next offset to read after each partition's last record in `records`. */
const commitsAfter = (records: ReadonlyArray<LogRecord>) => {
  const next = new Map<string, TopicPartition & { offset: number }>();
  for (const r of records) {
    next.set(tpKey(r), { topic: r.topic, partition: r.partition, offset: r.offset + 1 });
  }
  return [...next.values()];
};

/** A scope of its own (for a member leaving mid-test), closed at the latest with the test's. */
const memberScope = Effect.acquireRelease(Scope.make(), (scope) => Scope.close(scope, Exit.void));

/** A fresh topic, created. */
const newTopic = (label: string) =>
  Effect.gen(function* () {
    const topic = unique(label);
    yield* (yield* MessageLog).ensureTopics([topic]);
    return topic;
  });

export const messageLogConformance = (
  name: string,
  makeLayer: () => Layer.Layer<MessageLog, unknown>,
) =>
  layer(makeLayer(), { excludeTestServices: true, timeout: "60 seconds" })(
    `MessageLog conformance: ${name}`,
    (it) => {
      it.effect("ping succeeds and the backend names itself", () =>
        Effect.gen(function* () {
          const log = yield* MessageLog;
          yield* log.ping;
          expect(["kafka", "embedded"]).toContain(log.backend);
        }),
      );

      it.effect(
        "append: positions in input order, offsets from 0 per partition, a key keeps its partition and order",
        () =>
          Effect.gen(function* () {
            const log = yield* MessageLog;
            const topic = yield* newTopic("append");
            yield* log.ensureTopics([topic]); // again: nothing changes
            const keys = ["alpha", "beta", "gamma", "delta", "epsilon"];
            const sent = [
              ...range(20).map((i) => out(topic, `first-${i}`, keys[i % keys.length])),
              ...range(4).map((i) => out(topic, `keyless-${i}`)),
              ...range(10).map((i) => out(topic, `second-${i}`, keys[i % keys.length])),
            ];
            const before = yield* Clock.currentTimeMillis;
            const positions = [
              ...(yield* log.append(sent.slice(0, 20))),
              ...(yield* log.append(sent.slice(20, 24))),
              ...(yield* log.append(sent.slice(24))),
            ];
            const after = yield* Clock.currentTimeMillis;
            expect(positions).toHaveLength(sent.length);

            for (const key of keys) {
              const ofKey = positions.filter((_, i) => sent[i]?.key === key);
              expect(new Set(ofKey.map((p) => p.partition)).size, key).toBe(1);
              const offsets = ofKey.map((p) => p.offset);
              expect(offsets, key).toEqual([...offsets].sort((a, b) => a - b));
            }
            for (const offsets of Object.values(byPartition(positions))) {
              expect([...offsets].sort((a, b) => a - b)).toEqual(range(offsets.length));
            }

            // Each position holds what was appended there.
            const page = yield* log.read(topic, {}, 1_000);
            expect(page.next).toBeUndefined();
            const stored = new Map(page.records.map((r) => [at(r), r]));
            expect(stored.size).toBe(sent.length);
            sent.forEach((record, i) => {
              const position = positions[i] as Position;
              expect(position.topic).toBe(topic);
              const got = stored.get(at(position));
              expect(got && textOf(got), at(position)).toBe(decoder.decode(record.value));
              expect(got?.key).toBe(record.key);
              expect(got?.headers).toEqual(record.headers);
              // Plausible (the broker's clock may differ from ours a little).
              expect(got?.timestamp).toBeGreaterThan(before - 60_000);
              expect(got?.timestamp).toBeLessThan(after + 60_000);
            });
          }),
      );

      it.scoped(
        "a new group reads from the earliest record or from the end, as asked",
        () =>
          Effect.gen(function* () {
            const log = yield* MessageLog;
            const topic = yield* newTopic("start");
            const old = yield* log.append(range(4).map((i) => out(topic, `old-${i}`, "k")));
            const earliest = yield* join({
              group: unique("early"),
              topics: [topic],
              fromBeginning: true,
            });
            const latest = yield* join({
              group: unique("late"),
              topics: [topic],
              fromBeginning: false,
            });

            // A sole member has every partition of its topics.
            const all = yield* assignmentOf(earliest);
            expect(all.length).toBeGreaterThanOrEqual(2);
            expect(all).toEqual(
              range(all.length)
                .map((p) => `${topic}/${p}`)
                .sort(),
            );
            expect(yield* assignmentOf(latest)).toEqual(all);

            const fresh = yield* log.append(range(3).map((i) => out(topic, `new-${i}`, "k")));
            const fromEarliest = yield* take(earliest, 7);
            expect(textsOf(fromEarliest)).toEqual([
              ...range(4).map((i) => `old-${i}`),
              ...range(3).map((i) => `new-${i}`),
            ]);
            expect(fromEarliest.map(at)).toEqual([...old, ...fresh].map(at));
            // One partition, so an old record handed over would come first.
            const fromEnd = yield* take(latest, 3);
            expect(textsOf(fromEnd)).toEqual(range(3).map((i) => `new-${i}`));
            expect(fromEnd.map(at)).toEqual(fresh.map(at));
            expect(fromEnd[0]?.headers).toEqual({ ce_id: "new-0", ce_source: "conformance" });
            expect(fromEnd[0]?.key).toBe("k");
          }),
        GROUP_TEST_MS,
      );

      it.effect(
        "a member joining a group resumes exactly at its committed offset; what was not committed comes again",
        () =>
          Effect.gen(function* () {
            const log = yield* MessageLog;
            const topic = yield* newTopic("commit");
            const values = range(6).map((i) => `r-${i}`);
            yield* log.append(values.map((v) => out(topic, v, "k")));
            const options = { group: unique("resume"), topics: [topic], fromBeginning: true };
            const member = (fromBeginning: boolean, n: number, commitAfter: number) =>
              Effect.scoped(
                Effect.gen(function* () {
                  const m = yield* join({ ...options, fromBeginning });
                  const got = yield* take(m, n);
                  yield* m.consumer.commit(commitsAfter(got.slice(0, commitAfter)));
                  return textsOf(got);
                }),
              );

            // All six handed over; three committed.
            expect(yield* member(true, 6, 3)).toEqual(values);
            // `fromBeginning` is only for partitions without a committed offset.
            expect(yield* member(true, 3, 2)).toEqual(values.slice(3));
            // Nor does "from the end" skip what is committed but not read.
            expect(yield* member(false, 1, 1)).toEqual(values.slice(5));
            yield* log.append([out(topic, "r-6", "k")]);
            expect(yield* member(false, 1, 0)).toEqual(["r-6"]);
          }),
        GROUP_TEST_MS,
      );

      it.scoped(
        "two members share a group's partitions; when one leaves the other takes them all and re-reads what was not committed",
        () =>
          Effect.gen(function* () {
            const log = yield* MessageLog;
            const topic = yield* newTopic("split");
            const options = { group: unique("split"), topics: [topic], fromBeginning: true };
            const [scopeA, scopeB] = [yield* memberScope, yield* memberScope];
            const a = yield* Scope.extend(join(options), scopeA);
            const all = yield* assignmentOf(a);
            expect(all.length).toBeGreaterThanOrEqual(2);

            const b = yield* Scope.extend(join(options), scopeB);
            yield* eventually(
              "the split",
              ASSIGNMENT_WITHIN_MS,
              Effect.gen(function* () {
                const [ofA, ofB] = [yield* assignmentOf(a), yield* assignmentOf(b)];
                const disjoint = ofA.every((tp) => !ofB.includes(tp));
                const union = [...ofA, ...ofB].sort();
                return ofA.length > 0 && ofB.length > 0 && disjoint && `${union}` === `${all}`;
              }),
            );
            const ownedByA = yield* assignmentOf(a);

            // Ten records per partition on average, under distinct keys (fixed, so the
            // same partitions every run).
            const positions = yield* log.append(
              range(10 * all.length).map((i) => out(topic, `r-${i}`, `key-${i}`)),
            );
            const keyFor = new Map(positions.map((p, i) => [tpKey(p), `key-${i}`]));
            expect([...keyFor.keys()].sort()).toEqual(all);
            const forA = positions.filter((p) => ownedByA.includes(tpKey(p)));
            const forB = positions.filter((p) => !ownedByA.includes(tpKey(p)));
            const gotA = yield* take(a, forA.length);
            const gotB = yield* take(b, forB.length);
            expect(byPartition(gotA)).toEqual(byPartition(forA));
            expect(byPartition(gotB)).toEqual(byPartition(forB));

            // A commits all it had, B nothing; B leaves.
            yield* a.consumer.commit(commitsAfter(gotA));
            yield* Scope.close(scopeB, Exit.void);
            yield* eventually(
              "A has every partition",
              ASSIGNMENT_WITHIN_MS,
              Effect.map(assignmentOf(a), (tps) => `${tps}` === `${all}`),
            );
            // One more record per partition: whatever A re-reads of a partition comes before it.
            const markers = yield* log.append(
              all.map((tp) => out(topic, `marker-${tp}`, keyFor.get(tp))),
            );
            const expected = [...forB, ...markers];
            const again = yield* take(a, expected.length);
            expect(byPartition(again)).toEqual(byPartition(expected));
          }),
        GROUP_TEST_MS,
      );

      it.scoped(
        "back-pressure: a partition's next record waits until onRecord of the previous one completed",
        () =>
          Effect.gen(function* () {
            const log = yield* MessageLog;
            const topic = yield* newTopic("pressure");
            const positions = yield* log.append(range(3).map((i) => out(topic, `r-${i}`, "k")));
            const release = yield* Deferred.make<void>();
            const held = positions[0]?.offset;
            const m = yield* join(
              { group: unique("pressure"), topics: [topic], fromBeginning: true },
              (record) => (record.offset === held ? Deferred.await(release) : Effect.void),
            );
            expect(textsOf(yield* take(m, 1))).toEqual(["r-0"]);
            yield* Effect.sleep(QUIET_MS);
            expect(yield* Queue.size(m.records)).toBe(0);
            yield* Deferred.succeed(release, undefined);
            expect(textsOf(yield* take(m, 2))).toEqual(["r-1", "r-2"]);
          }),
        GROUP_TEST_MS,
      );

      it.scoped(
        "two groups each get every record of every topic they consume",
        () =>
          Effect.gen(function* () {
            const log = yield* MessageLog;
            const topics = [yield* newTopic("both-a"), yield* newTopic("both-b")];
            const batch = (label: string) =>
              topics.flatMap((topic) =>
                range(6).map((i) => out(topic, `${label}-${i}`, `key-${i % 4}`)),
              );
            const before = yield* log.append(batch("before"));
            const members = [
              yield* join({ group: unique("one"), topics, fromBeginning: true }),
              yield* join({ group: unique("two"), topics, fromBeginning: true }),
            ];
            for (const m of members) {
              const assigned = yield* assignmentOf(m);
              expect(new Set(assigned.map((tp) => tp.slice(0, tp.lastIndexOf("/"))))).toEqual(
                new Set(topics),
              );
            }
            const afterJoin = yield* log.append(batch("after"));
            const expected = byPartition([...before, ...afterJoin]);
            for (const m of members) {
              const got = yield* take(m, before.length + afterJoin.length);
              expect(byPartition(got)).toEqual(expected);
            }
          }),
        GROUP_TEST_MS,
      );

      it.effect(
        "read pages a topic across partitions; a missing or empty topic reads as empty",
        () =>
          Effect.gen(function* () {
            const log = yield* MessageLog;
            const missing = yield* log.read(unique("missing"), {}, 10);
            expect(missing.records).toEqual([]);
            expect(missing.next).toBeUndefined();
            const topic = yield* newTopic("read");
            const empty = yield* log.read(topic, {}, 10);
            expect(empty.records).toEqual([]);
            expect(empty.next).toBeUndefined();

            const positions = yield* log.append([
              ...range(13).map((i) => out(topic, `r-${i}`, `key-${i % 5}`)),
              ...range(4).map((i) => out(topic, `keyless-${i}`)),
            ]);
            const read: LogRecord[] = [];
            let from: Readonly<Record<number, number>> | undefined = {};
            let pages = 0;
            while (from !== undefined && pages < 50) {
              const page: TopicPage = yield* log.read(topic, from, 4);
              expect(page.records.length).toBeLessThanOrEqual(4);
              read.push(...page.records);
              from = page.next;
              pages++;
            }
            expect(from).toBeUndefined();
            expect(pages).toBeGreaterThanOrEqual(5);
            // Oldest first per partition, each record once, none missing.
            expect(byPartition(read)).toEqual(byPartition(positions));

            // From a given offset in one partition; the others from their start.
            const [busiest, offsets] = Object.entries(byPartition(positions)).sort(
              (x, y) => y[1].length - x[1].length,
            )[0] as [string, number[]];
            expect(offsets.length).toBeGreaterThanOrEqual(2);
            const partition = Number(busiest.slice(busiest.lastIndexOf("/") + 1));
            const rest = yield* log.read(topic, { [partition]: 1 }, 1_000);
            expect(rest.next).toBeUndefined();
            expect(byPartition(rest.records)).toEqual(
              byPartition(positions.filter((p) => p.partition !== partition || p.offset >= 1)),
            );
          }),
      );
    },
  );
