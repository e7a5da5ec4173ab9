/**
 * The embedded MessageLog: the log of one mesh instance, in process and
 * never persisted, with the semantics of `log.ts` (what a single-broker
 * Kafka would do).
 *
 * - A topic has `partitions` partitions (default 3), fixed when it is created
 *   by `ensureTopics`, or on the fly by an `append` or `consume` naming it.
 *   A key goes to the partition of its FNV-1a hash (same key, same
 *   partition); keyless records go round-robin.
 * - Offsets count from 0 per partition and never go back. A record is
 *   retained until `retentionMs` after its append (from then on it is gone,
 *   checked on every access, and a sweeper frees the memory) and while it is
 *   among the newest `maxRecordsPerPartition` of its partition. Reading from
 *   a position below the earliest retained record reads from that record.
 * - A group's members share the partitions of the topics they consume,
 *   round-robin over the topic-partitions (topics by name, then partition)
 *   and the members in join order. Every join and leave re-assigns every
 *   member: all of the group's reading loops stop (an `onRecord` in flight
 *   is interrupted), then each member gets its whole new assignment in
 *   `onAssigned` and reads again from the group's committed offsets; a
 *   partition with none from the earliest retained record (`fromBeginning`)
 *   or else from its end when the member starts reading it.
 * - One reading loop per assigned partition hands records over in offset
 *   order, the next only once `onRecord` completed; at the end it waits for
 *   the next append, which wakes it at once. With `onRecords`, it hands over
 *   everything appended since (up to `MAX_HANDOVER` records) at once. A
 *   defect in the handler is logged and the same records handed over again
 *   a second later.
 * - A commit counts only for partitions the member owns in the group's
 *   current assignment; others are ignored. A group nobody has been in for
 *   `retentionMs` is forgotten with its committed offsets (as Kafka's
 *   offsets retention does), so nothing grows without bound but the
 *   retained records.
 *
 * Times come from the Effect `Clock` of the layer's construction (so a
 * TestClock drives retention). Once the layer's scope closes, every call
 * fails with `StoreUnavailable` and every reading loop stops.
 */
import { Cause, Deferred, Duration, Effect, FiberId, FiberSet, Layer, Schedule } from "effect";
import {
  type ConsumeHandlers,
  type LogRecord,
  MessageLog,
  type MessageLogShape,
  type Position,
  StoreUnavailable,
  type TopicPage,
  type TopicPartition,
} from "./log.js";

const DEFAULT_PARTITIONS = 3;
const DEFAULT_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;
const DEFAULT_MAX_RECORDS_PER_PARTITION = 100_000;
const DEFAULT_SWEEP_INTERVAL = Duration.seconds(1);
/** Trimmed records are dropped from a partition's array once this many (and half of it) piled up. */
const COMPACT_AFTER = 1_024;
/** How long a record whose `onRecord` died waits before it is handed over again. */
const REDELIVERY_DELAY = Duration.seconds(1);
/** Records one `onRecords` gets at most (about what a Kafka fetch of small records brings). */
const MAX_HANDOVER = 500;

interface Partition {
  /** `log[i]` has offset `base + i`; `log[0, head)` are trimmed, kept until compaction. */
  log: LogRecord[];
  head: number;
  base: number;
  /** Completed (and replaced) by every append to the partition: what readers at its end await. */
  appended: Deferred.Deferred<void>;
}

interface Topic {
  readonly partitions: ReadonlyArray<Partition>;
  /** Round-robin counter of keyless records. */
  keyless: number;
}

interface Member {
  readonly id: number;
  readonly topics: ReadonlyArray<string>;
  readonly fromBeginning: boolean;
  readonly handlers: ConsumeHandlers;
  /** Its reading loops, one per assigned partition; closed with the scope of `consume`. */
  readonly readers: FiberSet.FiberSet;
  /** Forks a reading loop into `readers`, in the context `consume` was called in. */
  readonly fork: (loop: Effect.Effect<void>) => unknown;
}

interface Group {
  /** In join order. */
  members: ReadonlyArray<Member>;
  /** Members looking the group up to join it: it is not forgotten meanwhile. */
  joining: number;
  /** When the last member left. */
  emptySince: number;
  /** `tpKey` → next offset to read. */
  readonly committed: Map<string, number>;
  /** `tpKey` → id of the member owning the partition in the current assignment. */
  owners: Map<string, number>;
  /** Held while members join, leave and are re-assigned. */
  readonly lock: Effect.Semaphore;
}

interface State {
  readonly topics: Map<string, Topic>;
  readonly groups: Map<string, Group>;
  nextMemberId: number;
  closed: boolean;
}

const tpKey = (tp: TopicPartition): string => `${tp.partition}:${tp.topic}`;

const earliest = (p: Partition): number => p.base + p.head;
const end = (p: Partition): number => p.base + p.log.length;

const signal = (): Deferred.Deferred<void> => Deferred.unsafeMake<void>(FiberId.none);

/** Wakes the readers waiting at the end of `p`. */
const wake = (p: Partition): void => {
  const waiting = p.appended;
  p.appended = signal();
  Deferred.unsafeDone(waiting, Effect.void);
};

const encoder = new TextEncoder();

/** FNV-1a (32 bits) of the key's UTF-8 bytes. */
const hash = (key: string): number => {
  let h = 0x811c9dc5;
  for (const byte of encoder.encode(key)) h = Math.imul(h ^ byte, 0x01000193);
  return h >>> 0;
};

/**
 * The group's members' assignments: topic-partitions (topics by name) dealt
 * round-robin to the members, in join order, subscribed to their topic.
 */
const assign = (
  members: ReadonlyArray<Member>,
  partitionCount: (topic: string) => number,
): Map<Member, TopicPartition[]> => {
  const plan = new Map(members.map((m): [Member, TopicPartition[]] => [m, []]));
  const topics = [...new Set(members.flatMap((m) => m.topics))].sort();
  let turn = 0;
  for (const topic of topics) {
    const subscribers = members.filter((m) => m.topics.includes(topic));
    for (let partition = 0; partition < partitionCount(topic); partition++) {
      const member = subscribers[turn++ % subscribers.length] as Member;
      plan.get(member)?.push({ topic, partition });
    }
  }
  return plan;
};

const closedError = () =>
  new StoreUnavailable({ cause: new Error("the embedded message log is closed") });

export const EmbeddedMessageLog = {
  /**
   * A fresh, empty log for the layer's lifetime. `partitions` (default 3)
   * of every topic; records kept `retentionMs` (default 7 days) and at most
   * `maxRecordsPerPartition` (default 100 000) per partition; the sweeper
   * frees trimmed records every `sweepInterval` (default 1 s).
   */
  layer: (options?: {
    readonly partitions?: number;
    readonly retentionMs?: number;
    readonly maxRecordsPerPartition?: number;
    readonly sweepInterval?: Duration.DurationInput;
  }): Layer.Layer<MessageLog> =>
    Layer.scoped(
      MessageLog,
      Effect.gen(function* () {
        const partitions = options?.partitions ?? DEFAULT_PARTITIONS;
        const retentionMs = options?.retentionMs ?? DEFAULT_RETENTION_MS;
        const maxRecords = options?.maxRecordsPerPartition ?? DEFAULT_MAX_RECORDS_PER_PARTITION;
        const clock = yield* Effect.clock;
        const state = yield* Effect.acquireRelease(
          Effect.sync(
            (): State => ({ topics: new Map(), groups: new Map(), nextMemberId: 0, closed: false }),
          ),
          (s) =>
            Effect.suspend(() => {
              s.closed = true;
              for (const topic of s.topics.values()) topic.partitions.forEach(wake);
              const members = [...s.groups.values()].flatMap((g) => g.members);
              s.topics.clear();
              s.groups.clear();
              return Effect.forEach(members, (m) => FiberSet.clear(m.readers), { discard: true });
            }),
        );

        /** One synchronous step at the current time; fails once the log is closed. */
        const step = <A>(f: (now: number) => A): Effect.Effect<A, StoreUnavailable> =>
          Effect.suspend(() =>
            state.closed
              ? Effect.fail(closedError())
              : Effect.succeed(f(clock.unsafeCurrentTimeMillis())),
          );

        const topicOf = (name: string): Topic => {
          let topic = state.topics.get(name);
          if (topic === undefined) {
            topic = {
              partitions: Array.from({ length: partitions }, () => ({
                log: [],
                head: 0,
                base: 0,
                appended: signal(),
              })),
              keyless: 0,
            };
            state.topics.set(name, topic);
          }
          return topic;
        };

        const partitionOf = (tp: TopicPartition): Partition =>
          topicOf(tp.topic).partitions[tp.partition] as Partition;

        /** Drops what is past retention from the front of `p`. */
        const trim = (p: Partition, now: number): void => {
          while (p.head < p.log.length) {
            const oldest = p.log[p.head] as LogRecord;
            if (p.log.length - p.head <= maxRecords && now < oldest.timestamp + retentionMs) break;
            p.head++;
          }
          if (p.head >= COMPACT_AFTER && p.head * 2 >= p.log.length) {
            p.log = p.log.slice(p.head);
            p.base += p.head;
            p.head = 0;
          }
        };

        /**
         * The record at `offset`, or the earliest retained one after it;
         * waits for an append when there is none yet. Undefined once closed.
         */
        const recordFrom = (p: Partition, offset: number): Effect.Effect<LogRecord | undefined> =>
          Effect.suspend(() => {
            if (state.closed) return Effect.succeed(undefined);
            trim(p, clock.unsafeCurrentTimeMillis());
            const at = Math.max(offset, earliest(p));
            if (at < end(p)) return Effect.succeed(p.log[at - p.base]);
            return Effect.zipRight(Deferred.await(p.appended), recordFrom(p, offset));
          });

        /** Hands `records` (one, unless the handlers take several) over until it does not die. */
        const handOver = (
          handlers: ConsumeHandlers,
          records: ReadonlyArray<LogRecord>,
        ): Effect.Effect<void> =>
          // The stored records themselves (frozen, their values copied on append): handlers
          // only read them (log.ts), and a copy per record cost more than the handover.
          (handlers.onRecords
            ? handlers.onRecords(records)
            : handlers.onRecord(records[0] as LogRecord)
          ).pipe(
            Effect.catchAllDefect((defect) =>
              Effect.logError("onRecord died; the record is handed over again", defect).pipe(
                Effect.zipRight(Effect.sleep(REDELIVERY_DELAY)),
                Effect.zipRight(handOver(handlers, records)),
              ),
            ),
          );

        /** The record at `from` and those after it up to the end, at most `max`. */
        const following = (p: Partition, from: LogRecord, max: number): LogRecord[] => {
          const start = from.offset - p.base;
          return p.log.slice(start, Math.min(p.log.length, start + max));
        };

        /** Hands the records of `p` from `offset` on over to `handlers`, in offset order, until closed. */
        const readLoop = (
          handlers: ConsumeHandlers,
          p: Partition,
          offset: number,
        ): Effect.Effect<void> =>
          Effect.flatMap(recordFrom(p, offset), (record) => {
            if (record === undefined) return Effect.void;
            const records = handlers.onRecords ? following(p, record, MAX_HANDOVER) : [record];
            const last = records[records.length - 1] as LogRecord;
            return Effect.zipRight(
              handOver(handlers, records),
              readLoop(handlers, p, last.offset + 1),
            );
          });

        const startReading = (
          group: Group,
          member: Member,
          assignment: ReadonlyArray<TopicPartition>,
        ) =>
          Effect.sync(() => {
            if (state.closed) return;
            for (const tp of assignment) {
              const p = partitionOf(tp);
              const from =
                group.committed.get(tpKey(tp)) ?? (member.fromBeginning ? earliest(p) : end(p));
              member.fork(readLoop(member.handlers, p, from));
            }
          });

        /**
         * Changes the group's members, then (if they changed) re-assigns every
         * member, under the group's lock: every reading loop stops before any
         * member gets its new assignment, so a partition is read by one
         * member at a time.
         */
        const regroup = (
          group: Group,
          change: (members: ReadonlyArray<Member>) => ReadonlyArray<Member>,
        ): Effect.Effect<void> =>
          group.lock.withPermits(1)(
            Effect.uninterruptibleMask((restore) =>
              Effect.gen(function* () {
                const before = group.members;
                group.members = change(before);
                if (group.members === before) return;
                if (group.members.length === 0) group.emptySince = clock.unsafeCurrentTimeMillis();
                yield* Effect.forEach(before, (m) => FiberSet.clear(m.readers), { discard: true });
                if (state.closed) return;
                const plan = assign(group.members, (t) => topicOf(t).partitions.length);
                group.owners = new Map(
                  [...plan].flatMap(([m, tps]) => tps.map((tp) => [tpKey(tp), m.id] as const)),
                );
                yield* Effect.forEach(
                  plan,
                  ([member, assignment]) =>
                    restore(member.handlers.onAssigned(assignment)).pipe(
                      Effect.catchAllCause((cause) =>
                        Cause.isInterruptedOnly(cause)
                          ? Effect.void
                          : Effect.logError("onAssigned failed", cause),
                      ),
                      Effect.zipRight(startReading(group, member, assignment)),
                    ),
                  { concurrency: "unbounded", discard: true },
                );
              }),
            ),
          );

        /** Forgets groups nobody has been in for the retention time. */
        const forgetIdleGroups = (now: number): void => {
          for (const [name, group] of state.groups) {
            const idle = group.members.length === 0 && group.joining === 0;
            if (idle && now >= group.emptySince + retentionMs) state.groups.delete(name);
          }
        };

        const sweep = step((now) => {
          for (const topic of state.topics.values()) {
            for (const p of topic.partitions) trim(p, now);
          }
          forgetIdleGroups(now);
        }).pipe(Effect.catchAll(() => Effect.void)); // fails only once closed

        yield* Effect.forkScoped(
          Effect.repeat(sweep, Schedule.spaced(options?.sweepInterval ?? DEFAULT_SWEEP_INTERVAL)),
        );

        const log: MessageLogShape = {
          backend: "embedded",
          ping: step(() => undefined),

          ensureTopics: (topics) =>
            step(() => {
              for (const name of topics) topicOf(name);
            }),

          append: (records) =>
            step((now) =>
              records.map((r): Position => {
                const topic = topicOf(r.topic);
                const count = topic.partitions.length;
                const partition =
                  r.key === undefined ? topic.keyless++ % count : hash(r.key) % count;
                const p = topic.partitions[partition] as Partition;
                const offset = end(p);
                p.log.push(
                  Object.freeze({
                    topic: r.topic,
                    partition,
                    offset,
                    ...(r.key === undefined ? {} : { key: r.key }),
                    value: r.value.slice(),
                    headers: Object.freeze({ ...r.headers }),
                    timestamp: now,
                  }),
                );
                trim(p, now);
                wake(p);
                return { topic: r.topic, partition, offset };
              }),
            ),

          consume: (options, handlers) =>
            Effect.gen(function* () {
              const readers = yield* FiberSet.make();
              const fork = yield* FiberSet.runtime(readers)();
              const { group, member } = yield* step(() => {
                for (const name of options.topics) topicOf(name);
                let group = state.groups.get(options.group);
                if (group === undefined) {
                  group = {
                    members: [],
                    joining: 0,
                    emptySince: 0,
                    committed: new Map(),
                    owners: new Map(),
                    lock: Effect.unsafeMakeSemaphore(1),
                  };
                  state.groups.set(options.group, group);
                }
                group.joining++;
                const member: Member = {
                  id: state.nextMemberId++,
                  topics: [...new Set(options.topics)],
                  fromBeginning: options.fromBeginning,
                  handlers,
                  readers,
                  fork,
                };
                return { group, member };
              });
              yield* Effect.addFinalizer(() =>
                regroup(group, (members) =>
                  members.includes(member) ? members.filter((m) => m !== member) : members,
                ),
              );
              yield* regroup(group, (members) => [...members, member]).pipe(
                Effect.ensuring(Effect.sync(() => group.joining--)),
              );
              return {
                commit: (commits) =>
                  step(() => {
                    for (const c of commits) {
                      const key = tpKey(c);
                      if (group.owners.get(key) === member.id) group.committed.set(key, c.offset);
                    }
                  }),
              };
            }),

          read: (name, from, limit) =>
            step((now): TopicPage => {
              const topic = state.topics.get(name);
              if (topic === undefined) return { records: [] };
              const records: LogRecord[] = [];
              const next: Record<number, number> = {};
              let more = false;
              topic.partitions.forEach((p, partition) => {
                trim(p, now);
                let offset = Math.max(from[partition] ?? 0, earliest(p));
                for (; offset < end(p) && records.length < limit; offset++) {
                  records.push(p.log[offset - p.base] as LogRecord);
                }
                next[partition] = offset;
                if (offset < end(p)) more = true;
              });
              return more ? { records, next } : { records };
            }),
        };
        return log;
      }),
    ),
};
