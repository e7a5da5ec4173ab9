import { randomUUID } from "node:crypto";
import { describe, expect, it } from "@effect/vitest";
import {
  Cause,
  Chunk,
  Context,
  Deferred,
  Effect,
  Exit,
  Layer,
  Option,
  Queue,
  Ref,
  Schedule,
} from "effect";
import { Kafka, logLevel } from "kafkajs";
import { afterAll, inject } from "vitest";
import { KafkaMessageLog, type KafkaMessageLogOptions } from "../../src/messaging/kafka.js";
import {
  type LogRecord,
  MessageLog,
  type OutRecord,
  type StoreUnavailable,
  type TopicPartition,
} from "../../src/messaging/log.js";
import { messageLogConformance } from "../conformance/messagelog.suite.js";
import type { InfraAddresses } from "../infra/index.js";
import { privateBroker } from "../support/kafka-broker.js";

const infra: InfraAddresses = inject("infra");

const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

/** A kafkajs client of the test's own, to look at what the adapter left on the broker. */
const plainKafka = () =>
  new Kafka({
    clientId: "messagelog-kafka-test",
    brokers: infra.kafkaBrokers,
    logLevel: logLevel.NOTHING,
  });

/** Topics made through the logs of this file (the conformance suite's included), deleted at the end. */
const created = new Set<string>();
afterAll(async () => {
  if (created.size === 0) return;
  const admin = plainKafka().admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    await admin.deleteTopics({ topics: [...created].filter((t) => existing.has(t)) });
  } finally {
    await admin.disconnect();
  }
});

const options = (overrides: Partial<KafkaMessageLogOptions> = {}): KafkaMessageLogOptions => ({
  brokers: infra.kafkaBrokers,
  clientId: unique("fo-test"),
  partitions: 3,
  replicationFactor: -1,
  retentionMs: 3_600_000,
  sendTimeoutMs: 10_000,
  ...overrides,
});

/** The adapter, noting the topics it is asked to create. */
const kafkaLog = (overrides: Partial<KafkaMessageLogOptions> = {}) =>
  Layer.map(KafkaMessageLog.layer(options(overrides)), (ctx) => {
    const log = Context.get(ctx, MessageLog);
    return Context.make(MessageLog, {
      ...log,
      ensureTopics: (topics) =>
        Effect.zipRight(
          Effect.sync(() => {
            for (const t of topics) created.add(t);
          }),
          log.ensureTopics(topics),
        ),
    });
  });

messageLogConformance("kafka", () => kafkaLog());

/** A log of its own (a mesh instance), closed with the test's scope. */
const instance = (overrides: Partial<KafkaMessageLogOptions> = {}) =>
  Layer.build(kafkaLog(overrides)).pipe(Effect.map(Context.get(MessageLog)));

const newTopic = (log: Context.Tag.Service<MessageLog>) =>
  Effect.gen(function* () {
    const topic = unique("mlk");
    yield* log.ensureTopics([topic]);
    return topic;
  });

const text = new TextEncoder();
const out = (topic: string, value: string, key?: string): OutRecord => ({
  topic,
  key,
  value: text.encode(value),
  headers: { ce_id: value, ce_type: "Test.Happened", tenant: "acme" },
});
const textOf = (r: LogRecord) => new TextDecoder().decode(r.value);

const within =
  (label: string, seconds: number) =>
  <A, E, R>(self: Effect.Effect<A, E, R>) =>
    Effect.timeoutFail(self, {
      duration: `${seconds} seconds`,
      onTimeout: () => new Error(`${label}: not within ${seconds} s`),
    });

/** The tag of the error an effect failed with (a defect or success is reported as such). */
const failureTag = (exit: Exit.Exit<unknown, unknown>): string =>
  Exit.match(exit, {
    onSuccess: (value) => `succeeded with ${JSON.stringify(value)}`,
    onFailure: (cause) =>
      Option.match(Cause.failureOption(cause), {
        onNone: () => `no failure: ${Cause.pretty(cause)}`,
        onSome: (e) =>
          typeof e === "object" && e !== null && "_tag" in e ? String(e._tag) : String(e),
      }),
  });

describe("KafkaMessageLog", () => {
  it.live("options that cannot work fail the layer", () =>
    Effect.gen(function* () {
      const bad: ReadonlyArray<Partial<KafkaMessageLogOptions>> = [
        { brokers: [] },
        { brokers: ["127.0.0.1"] },
        { brokers: ["127.0.0.1:99999"] },
        { brokers: ["a b:9092"] },
        { partitions: 0 },
        { replicationFactor: 0 },
        { clientId: "" },
      ];
      for (const overrides of bad) {
        const exit = yield* Effect.exit(Effect.scoped(instance(overrides)));
        expect(failureTag(exit), JSON.stringify(overrides)).toBe("KafkaMessageLogConfigError");
      }
    }),
  );

  it.scopedLive("what it appends, a plain kafkajs consumer reads as sent", () =>
    Effect.gen(function* () {
      const log = yield* instance();
      const topic = yield* newTopic(log);
      const value = new Uint8Array(256).map((_, i) => i);
      const [position] = yield* log.append([
        {
          topic,
          key: "EXEC-7",
          value,
          headers: { ce_id: "id-1", ce_type: "Flow.Started", "x-é": "ü" },
        },
      ]);

      const consumer = plainKafka().consumer({ groupId: unique("plain"), maxWaitTimeInMs: 100 });
      yield* Effect.acquireRelease(
        Effect.promise(() => consumer.connect()),
        () => Effect.promise(() => consumer.disconnect()),
      );
      const seen = yield* Deferred.make<{
        partition: number;
        offset: string;
        key: string | undefined;
        value: Buffer | null;
        headers: Record<string, string>;
      }>();
      yield* Effect.promise(async () => {
        await consumer.subscribe({ topics: [topic], fromBeginning: true });
        await consumer.run({
          eachMessage: async ({ partition, message }) => {
            const headers: Record<string, string> = {};
            for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
            Deferred.unsafeDone(
              seen,
              Exit.succeed({
                partition,
                offset: message.offset,
                key: message.key?.toString(),
                value: message.value,
                headers,
              }),
            );
          },
        });
      });
      const got = yield* Deferred.await(seen).pipe(within("the plain consumer", 30));
      expect(got.partition).toBe(position?.partition);
      expect(got.offset).toBe(String(position?.offset));
      expect(got.key).toBe("EXEC-7");
      expect(got.value && new Uint8Array(got.value)).toEqual(value);
      expect(got.headers).toEqual({ ce_id: "id-1", ce_type: "Flow.Started", "x-é": "ü" });
    }),
  );

  it.scopedLive(
    "topics get the configured partitions and retention, append-time timestamps, room for 1 MiB payloads",
    () =>
      Effect.gen(function* () {
        const log = yield* instance({ partitions: 4, retentionMs: 123_456_000 });
        const topic = yield* newTopic(log);
        const admin = plainKafka().admin();
        yield* Effect.acquireRelease(
          Effect.promise(() => admin.connect()),
          () => Effect.promise(() => admin.disconnect()),
        );
        const meta = yield* Effect.promise(() => admin.fetchTopicMetadata({ topics: [topic] }));
        expect(meta.topics[0]?.partitions).toHaveLength(4);
        const described = yield* Effect.promise(() =>
          admin.describeConfigs({
            includeSynonyms: false,
            resources: [
              {
                type: 2,
                name: topic,
                configNames: ["retention.ms", "max.message.bytes", "message.timestamp.type"],
              },
            ],
          }),
        );
        const entries = Object.fromEntries(
          (described.resources[0]?.configEntries ?? []).map((e) => [e.configName, e.configValue]),
        );
        expect(entries["retention.ms"]).toBe("123456000");
        expect(Number(entries["max.message.bytes"])).toBeGreaterThanOrEqual(2 * 1024 * 1024);
        // Timestamps are the broker's append time.
        expect(entries["message.timestamp.type"]).toBe("LogAppendTime");

        // Three 1 MiB records in one append: more than one request may hold.
        const big = new Uint8Array(1024 * 1024).fill(7);
        const positions = yield* log.append(
          [1, 2, 3].map(() => ({ topic, key: "k", value: big, headers: {} })),
        );
        expect(positions.map((p) => p.offset)).toEqual([0, 1, 2]);
        const page = yield* log.read(topic, {}, 10);
        expect(page.records.map((r) => r.value.byteLength)).toEqual([
          big.length,
          big.length,
          big.length,
        ]);
      }),
  );

  it.scopedLive(
    "append creates no topic; a topic deleted behind the log's back harms no other, and ensureTopics creates it again",
    () =>
      Effect.gen(function* () {
        const log = yield* instance({ sendTimeoutMs: 5_000 });
        const admin = plainKafka().admin();
        yield* Effect.acquireRelease(
          Effect.promise(() => admin.connect()),
          () => Effect.promise(() => admin.disconnect()),
        );
        const exists = (topic: string) =>
          Effect.promise(() => admin.listTopics()).pipe(Effect.map((ts) => ts.includes(topic)));

        const never = unique("never");
        const refused = yield* Effect.exit(log.append([out(never, "x", "k")]));
        expect(failureTag(refused)).toBe("StoreUnavailable");
        expect(yield* exists(never)).toBe(false);

        const [topic, other] = [yield* newTopic(log), yield* newTopic(log)];
        yield* log.append([out(topic, "one", "k"), out(other, "one", "k")]);
        yield* Effect.promise(() => admin.deleteTopics({ topics: [topic] }));
        yield* exists(topic).pipe(
          Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (e) => !e }),
          within("the deletion", 20),
        );
        // kafkajs' producer keeps asking for the deleted topic's metadata: a topic new to it
        // fails, until the producer is replaced.
        const third = yield* newTopic(log);
        const [first] = yield* log.append([out(third, "one", "k")]);
        expect(first?.offset).toBe(0);
        // The log still believes in the deleted one: the append fails, and the topic is forgotten.
        expect(failureTag(yield* Effect.exit(log.append([out(topic, "two", "k")])))).toBe(
          "StoreUnavailable",
        );
        yield* log.ensureTopics([topic, other]);
        const [again] = yield* log.append([out(topic, "three", "k")]);
        // (The failed append may still land in the new topic: kafkajs retries on after the bound.)
        const page = yield* log.read(topic, {}, 10);
        const stored = page.records.find(
          (r) => r.partition === again?.partition && r.offset === again.offset,
        );
        expect(stored && textOf(stored)).toBe("three");
        const [next] = yield* log.append([out(other, "two", "k")]);
        expect(next?.offset).toBe(1);
      }),
  );

  it.scopedLive(
    "an onRecord outlasting the session timeout keeps the member in its group",
    () =>
      Effect.gen(function* () {
        const log = yield* instance();
        const topic = yield* newTopic(log);
        yield* log.append([out(topic, "slow", "k"), out(topic, "next", "k")]);
        const assignments = yield* Ref.make(0);
        const handed = yield* Queue.unbounded<string>();
        const consumer = yield* log.consume(
          { group: unique("slow"), topics: [topic], fromBeginning: true },
          {
            onRecord: (r) =>
              Queue.offer(handed, textOf(r)).pipe(
                // The session times out after 10 s without heartbeats.
                Effect.zipRight(textOf(r) === "slow" ? Effect.sleep("13 seconds") : Effect.void),
              ),
            onAssigned: () => Ref.update(assignments, (n) => n + 1),
          },
        );
        expect(yield* Queue.take(handed).pipe(within("the slow record", 20))).toBe("slow");
        const next = yield* Queue.takeBetween(handed, 1, 1).pipe(within("the next record", 30));
        expect(Chunk.toArray(next)).toEqual(["next"]);
        // No rebalance happened: still the first assignment, and commits count.
        expect(yield* Ref.get(assignments)).toBe(1);
        yield* consumer.commit([{ topic, partition: 0, offset: 0 }]);
      }),
    60_000,
  );

  it.scopedLive(
    "a member joining interrupts an onRecord in flight; the record comes again from the commit",
    () =>
      Effect.gen(function* () {
        const log = yield* instance();
        const topic = yield* newTopic(log);
        const [held] = yield* log.append([out(topic, "held", "k")]);
        const group = unique("interrupt");
        const interrupted = yield* Deferred.make<void>();
        const handedToA = yield* Queue.unbounded<LogRecord>();
        yield* log.consume(
          { group, topics: [topic], fromBeginning: true },
          {
            onRecord: (r) =>
              Queue.offer(handedToA, r).pipe(
                Effect.zipRight(Effect.never),
                Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined)),
              ),
            onAssigned: () => Effect.void,
          },
        );
        yield* Queue.take(handedToA).pipe(within("A's first record", 20));

        // B joins: A's session sees the rebalance at its next heartbeat and lets go.
        const handedToB = yield* Queue.unbounded<LogRecord>();
        const assignedToB = yield* Ref.make<ReadonlyArray<TopicPartition>>([]);
        yield* log.consume(
          { group, topics: [topic], fromBeginning: true },
          {
            onRecord: (r) => Queue.offer(handedToB, r),
            onAssigned: (tps) => Ref.set(assignedToB, tps),
          },
        );
        yield* Deferred.await(interrupted).pipe(within("A's onRecord interrupted", 30));
        // The held record is handed over again, to whichever member has its partition now.
        const ownedByB = (yield* Ref.get(assignedToB)).some(
          (tp) => tp.partition === held?.partition,
        );
        const again = yield* Queue.take(ownedByB ? handedToB : handedToA).pipe(
          within("the held record again", 30),
        );
        expect(again.offset).toBe(held?.offset);
        expect(textOf(again)).toBe("held");
      }),
    90_000,
  );

  it.scopedLive(
    "a consume given up while joining leaves no member behind",
    () =>
      Effect.gen(function* () {
        const log = yield* instance();
        const topic = yield* newTopic(log);
        const admin = plainKafka().admin();
        yield* Effect.acquireRelease(
          Effect.promise(() => admin.connect()),
          () => Effect.promise(() => admin.disconnect()),
        );
        const group = unique("quit");
        const members = Effect.promise(() => admin.describeGroups([group])).pipe(
          Effect.map((d) => d.groups[0]?.members.length ?? 0),
        );
        const join = log.consume(
          { group, topics: [topic], fromBeginning: true },
          { onRecord: () => Effect.void, onAssigned: () => Effect.void },
        );
        yield* join;
        // A second member's join waits for the first to rejoin (up to a heartbeat, 1 s):
        // given up meanwhile, at various points.
        for (const ms of [150, 400, 700]) {
          yield* Effect.scoped(join).pipe(Effect.timeout(`${ms} millis`), Effect.ignore);
        }
        yield* members.pipe(
          Effect.repeat({ schedule: Schedule.spaced("200 millis"), until: (n) => n === 1 }),
          within("the group back to one member", 30),
        );
        // A member still joining after all would show up at once.
        yield* Effect.sleep("2 seconds");
        expect(yield* members).toBe(1);
      }),
    60_000,
  );

  it.scopedLive(
    "broker unreachable: the layer builds and every call fails with StoreUnavailable within its bound",
    () =>
      Effect.gen(function* () {
        const log = yield* instance({ brokers: ["127.0.0.1:1"], sendTimeoutMs: 3_000 });
        const topic = unique("down");
        const calls: ReadonlyArray<readonly [string, Effect.Effect<unknown, StoreUnavailable>]> = [
          ["ping", log.ping],
          ["ensureTopics", log.ensureTopics([topic])],
          ["append", log.append([out(topic, "lost", "k")])],
          [
            "consume",
            Effect.scoped(
              log.consume(
                { group: unique("down"), topics: [topic], fromBeginning: true },
                { onRecord: () => Effect.void, onAssigned: () => Effect.void },
              ),
            ),
          ],
          ["read", log.read(topic, {}, 10)],
        ];
        // All at once; ping is bounded by 2 s, the others by the 3 s send timeout (read and
        // consume: their first step). Each must fail with StoreUnavailable, never hang.
        const outcomes = yield* Effect.forEach(
          calls,
          ([name, effect]) =>
            Effect.exit(effect.pipe(within(name, 8))).pipe(
              Effect.map((exit) => [name, failureTag(exit)] as const),
            ),
          { concurrency: "unbounded" },
        );
        expect(Object.fromEntries(outcomes)).toEqual(
          Object.fromEntries(calls.map(([name]) => [name, "StoreUnavailable"])),
        );
      }),
    30_000,
  );

  it.scopedLive(
    "a broker that goes away and comes back: calls fail meanwhile, then the same log works again",
    () =>
      Effect.gen(function* () {
        const broker = yield* privateBroker;
        const log = yield* instance({ brokers: [broker.address], sendTimeoutMs: 3_000 });
        const topic = unique("back");

        // Not started yet: the log exists, its calls fail.
        expect(failureTag(yield* Effect.exit(log.ping))).toBe("StoreUnavailable");
        expect(failureTag(yield* Effect.exit(log.ensureTopics([topic])))).toBe("StoreUnavailable");
        yield* Effect.promise(() => broker.start());
        yield* eventually("ensureTopics once the broker is up", 30, log.ensureTopics([topic]));
        yield* log.append([out(topic, "before", "k")]);
        const handed = yield* Queue.unbounded<string>();
        yield* log.consume(
          { group: unique("back"), topics: [topic], fromBeginning: true },
          { onRecord: (r) => Queue.offer(handed, textOf(r)), onAssigned: () => Effect.void },
        );
        expect(yield* Queue.take(handed).pipe(within("the first record", 20))).toBe("before");

        // Gone: every call fails within its bound.
        yield* Effect.promise(() => broker.kill());
        for (const [name, effect] of [
          ["ping", log.ping],
          ["append", log.append([out(topic, "lost?", "k")])],
        ] as const) {
          const exit = yield* Effect.exit(effect.pipe(within(name, 8)));
          expect(failureTag(exit), name).toBe("StoreUnavailable");
        }

        // Back: appends go through again, and the member (restarted by kafkajs) reads on.
        yield* Effect.promise(() => broker.start());
        yield* eventually(
          "append once the broker is back",
          60,
          log.append([out(topic, "after", "k")]),
        );
        yield* log.ping;
        yield* Queue.take(handed).pipe(
          Effect.repeat({ until: (v) => v === "after" }),
          within("the record appended after the restart", 60),
        );
      }),
    150_000,
  );
});

/** Repeats `effect` until it succeeds; fails after `seconds`. */
const eventually = <A, E>(label: string, seconds: number, effect: Effect.Effect<A, E>) =>
  effect.pipe(Effect.retry({ schedule: Schedule.spaced("250 millis") }), within(label, seconds));
