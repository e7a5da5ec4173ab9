/**
 * `read`: a page of a topic without the caller's group. kafkajs has no
 * manual assignment, so each read uses clients of its own: an admin client
 * for the topic's low and high watermarks, and a consumer in a throwaway
 * group (`${clientId}.read.<uuid>`, never committed to, so the broker drops
 * it once it leaves) that is positioned at `from` when it joins and reads
 * until the page is complete.
 *
 * Pages are what the embedded log gives: partitions in order, each from
 * its position (`from`, else its earliest retained record) up to the high
 * watermark seen at the start, filling `limit` from partition 0 on; `next`
 * holds every partition's next offset, and is absent once everything up to
 * those watermarks was read. A topic that does not exist reads as empty.
 */
import { randomUUID } from "node:crypto";
import { Deferred, Effect, Exit } from "effect";
import type { EachBatchPayload } from "kafkajs";
import { type LogRecord, StoreUnavailable, type TopicPage } from "../log.js";
import {
  CLIENT_RETRY,
  call,
  closeConsumer,
  closeQuietly,
  type KafkaClient,
  READ_TIMEOUT,
  timedOut,
  whileLeaderMoves,
} from "./client.js";
import { fromMessage } from "./records.js";

interface PartitionRange {
  readonly partition: number;
  /** Where the page starts. */
  readonly start: number;
  /** The high watermark when the read began: the page ends before it. */
  readonly high: number;
}

const pageOf = (
  ranges: ReadonlyArray<PartitionRange>,
  collected: ReadonlyMap<number, ReadonlyArray<LogRecord>>,
  limit: number,
): TopicPage => {
  const records: LogRecord[] = [];
  const next: Record<number, number> = {};
  let more = false;
  for (const range of ranges) {
    const taken = (collected.get(range.partition) ?? []).slice(
      0,
      Math.max(0, limit - records.length),
    );
    records.push(...taken);
    const last = taken[taken.length - 1];
    next[range.partition] = last === undefined ? range.start : last.offset + 1;
    if ((next[range.partition] ?? range.high) < range.high) more = true;
  }
  return more ? { records, next } : { records };
};

export const makeRead =
  (client: KafkaClient) =>
  (
    topic: string,
    from: Readonly<Record<number, number>>,
    limit: number,
  ): Effect.Effect<TopicPage, StoreUnavailable> =>
    Effect.scoped(
      Effect.gen(function* () {
        const admin = client.kafka.admin();
        yield* Effect.addFinalizer(() => closeQuietly("admin client", () => admin.disconnect()));
        const watermarks = yield* call(
          "read watermarks",
          async () => {
            await admin.connect();
            if (!(await admin.listTopics()).includes(topic)) return undefined;
            return admin.fetchTopicOffsets(topic);
          },
          client.sendTimeout,
          whileLeaderMoves,
        );
        if (watermarks === undefined) return { records: [] };

        const ranges: PartitionRange[] = watermarks
          .map(({ partition, low, high }) => {
            const lowest = Number(low);
            const highest = Number(high);
            const wanted = from[partition] ?? lowest;
            return { partition, start: Math.min(Math.max(wanted, lowest), highest), high: highest };
          })
          .sort((a, b) => a.partition - b.partition);
        const collected = new Map<number, LogRecord[]>(ranges.map((r) => [r.partition, []]));
        if (limit <= 0 || ranges.every((r) => r.start >= r.high)) {
          return pageOf(ranges, collected, limit);
        }

        /** Next offset to take per partition. */
        const position = new Map(ranges.map((r) => [r.partition, r.start]));
        const complete = () =>
          ranges.every(
            (r) =>
              (position.get(r.partition) ?? r.high) >= r.high ||
              (collected.get(r.partition)?.length ?? 0) >= limit,
          );
        const finished = yield* Deferred.make<void, StoreUnavailable>();
        let closed = false;
        /** The consumer's `run` (settles once joined). */
        let running: Promise<void> = Promise.resolve();

        const consumer = client.kafka.consumer({
          groupId: `${client.options.clientId}.read.${randomUUID()}`,
          sessionTimeout: 10_000,
          rebalanceTimeout: 10_000,
          heartbeatInterval: 1_000,
          maxWaitTimeInMs: 100,
          maxBytesPerPartition: client.maxMessageBytes,
          allowAutoTopicCreation: false,
          retry: { ...CLIENT_RETRY, restartOnFailure: async () => !closed },
        });
        yield* Effect.addFinalizer(() =>
          Effect.suspend(() => {
            closed = true;
            return closeConsumer(consumer, () => running);
          }),
        );
        consumer.on(consumer.events.GROUP_JOIN, () => {
          for (const [partition, offset] of position) {
            consumer.seek({ topic, partition, offset: String(offset) });
          }
        });
        consumer.on(consumer.events.CRASH, ({ payload }) => {
          if (!payload.restart) {
            Deferred.unsafeDone(
              finished,
              Exit.fail(new StoreUnavailable({ cause: payload.error })),
            );
          }
        });
        const eachBatch = async ({ batch, isStale }: EachBatchPayload) => {
          const records = collected.get(batch.partition);
          if (batch.topic !== topic || records === undefined) return;
          const high = ranges.find((r) => r.partition === batch.partition)?.high ?? 0;
          for (const message of batch.messages) {
            if (isStale()) return;
            const offset = Number(message.offset);
            if (offset < (position.get(batch.partition) ?? high)) continue;
            if (offset >= high || records.length >= limit) break;
            records.push(fromMessage(topic, batch.partition, message));
            position.set(batch.partition, offset + 1);
          }
          if (complete()) Deferred.unsafeDone(finished, Exit.void);
        };

        yield* call(
          "read",
          async () => {
            await consumer.connect();
            await consumer.subscribe({ topics: [topic], fromBeginning: true });
          },
          client.sendTimeout,
        );
        // Resolves once joined (or crashed: kafkajs then restarts it or reports CRASH).
        running = consumer.run({ autoCommit: false, eachBatch }).catch((cause: unknown) => {
          Deferred.unsafeDone(finished, Exit.fail(new StoreUnavailable({ cause })));
        });
        yield* Deferred.await(finished);
        return pageOf(ranges, collected, limit);
      }),
    ).pipe(
      // On timeout, the clients close in the background.
      Effect.disconnect,
      Effect.timeoutFail({
        duration: READ_TIMEOUT,
        onTimeout: timedOut(`read of ${topic}`, READ_TIMEOUT),
      }),
    );
