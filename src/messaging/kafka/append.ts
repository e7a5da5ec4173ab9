/**
 * `append` on an idempotent producer: acks from all in-sync replicas, no
 * topic auto-creation, kafkajs' default partitioner (murmur2 of the key,
 * as the Java client: a key maps to the same partition from any client).
 *
 * Positions: kafkajs answers with the base offset of each partition's
 * batch, and a request carries one batch per partition holding that
 * partition's records in input order; the partitioner below remembers
 * which partition it chose for each message (and keeps the choice if
 * kafkajs re-partitions on a retry), so a record's offset is its
 * partition's base offset plus its rank in the batch.
 *
 * Records go in requests of at most `maxRequestBytes` (one after another),
 * as a topic refuses a batch above its `max.message.bytes`; an append
 * failing after its first request leaves the earlier ones stored.
 *
 * A producer kafkajs cannot go on with is replaced by a new one: it keeps
 * every topic it ever sent to in its metadata requests, so once one of them
 * is deleted each request naming a topic new to it fails; or the broker
 * refused its idempotence state. The append that found out is tried once
 * more on the new producer if none of its requests went through yet.
 */
import { Effect, Runtime } from "effect";
import {
  type ICustomPartitioner,
  type Message,
  Partitioners,
  type Producer,
  type RecordMetadata,
} from "kafkajs";
import type { OutRecord, Position, StoreUnavailable } from "../log.js";
import {
  CLIENT_RETRY,
  call,
  closeQuietly,
  hasErrorType,
  type KafkaClient,
  sharedConnect,
} from "./client.js";
import { sizeOf, toMessage } from "./records.js";

/** Errors after which a producer is not used again. */
const PRODUCER_BROKEN = [
  "UNKNOWN_TOPIC_OR_PARTITION",
  "OUT_OF_ORDER_SEQUENCE_NUMBER",
  "UNKNOWN_PRODUCER_ID",
  "INVALID_PRODUCER_EPOCH",
  "INVALID_PRODUCER_ID_MAPPING",
];

interface Instance {
  readonly producer: Producer;
  readonly connect: () => Promise<void>;
}

/** Consecutive runs of `records` of at most `limit` bytes (a larger record alone). */
const requestsOf = (records: ReadonlyArray<OutRecord>, limit: number): number[][] => {
  const requests: number[][] = [];
  let current: number[] = [];
  let bytes = 0;
  records.forEach((record, i) => {
    const size = sizeOf(record);
    if (current.length > 0 && bytes + size > limit) {
      requests.push(current);
      current = [];
      bytes = 0;
    }
    current.push(i);
    bytes += size;
  });
  if (current.length > 0) requests.push(current);
  return requests;
};

const tpKey = (topic: string, partition: number) => `${partition}@${topic}`;

export const makeAppend = (
  client: KafkaClient,
  /** Called with the topics of an append that failed for want of a topic. */
  forgetTopics: (topics: ReadonlyArray<string>) => void,
) =>
  Effect.gen(function* () {
    const chosen = new WeakMap<Message, number>();
    const createPartitioner: ICustomPartitioner = () => {
      const partitioner = Partitioners.DefaultPartitioner();
      return (args) => {
        const previous = chosen.get(args.message);
        if (
          previous !== undefined &&
          args.partitionMetadata.some((p) => p.partitionId === previous)
        ) {
          return previous;
        }
        const partition = partitioner(args);
        chosen.set(args.message, partition);
        return partition;
      };
    };

    const create = (): Instance => {
      const producer = client.kafka.producer({
        idempotent: true,
        allowAutoTopicCreation: false,
        createPartitioner,
        // Bounded: an idempotent producer retries for ever by default.
        retry: CLIENT_RETRY,
      });
      return { producer, connect: sharedConnect(() => producer.connect()) };
    };

    const runtime = yield* Effect.runtime<never>();
    let current = create();
    yield* Effect.addFinalizer(() => closeQuietly("producer", () => current.producer.disconnect()));

    /** Puts a new producer in place of `broken` (once), closing that one in the background. */
    const replace = (broken: Instance): Instance => {
      if (current === broken) {
        current = create();
        Runtime.runFork(runtime)(
          Effect.logWarning(
            "message log (kafka): replacing the producer after an error it cannot go on from",
          ).pipe(Effect.zipRight(closeQuietly("producer", () => broken.producer.disconnect()))),
        );
      }
      return current;
    };

    /** Sends `records` in requests; `stored` counts the requests that succeeded. */
    const send = async (
      instance: Instance,
      records: ReadonlyArray<OutRecord>,
      signal: AbortSignal,
      progress: { stored: number },
    ): Promise<Position[]> => {
      await instance.connect();
      const messages = records.map(toMessage);
      const positions: Position[] = [];
      for (const request of requestsOf(records, client.maxRequestBytes)) {
        signal.throwIfAborted();
        const byTopic = new Map<string, Message[]>();
        for (const i of request) {
          const topic = (records[i] as OutRecord).topic;
          const list = byTopic.get(topic) ?? [];
          list.push(messages[i] as Message);
          byTopic.set(topic, list);
        }
        const stored: RecordMetadata[] = await instance.producer.sendBatch({
          acks: -1,
          timeout: client.options.sendTimeoutMs,
          topicMessages: [...byTopic].map(([topic, list]) => ({ topic, messages: list })),
        });
        progress.stored += 1;
        const base = new Map(
          stored.map((m) => [tpKey(m.topicName, m.partition), m.baseOffset ?? m.offset]),
        );
        const rank = new Map<string, number>();
        for (const i of request) {
          const topic = (records[i] as OutRecord).topic;
          const partition = chosen.get(messages[i] as Message);
          const key = partition === undefined ? undefined : tpKey(topic, partition);
          const offset = key === undefined ? undefined : base.get(key);
          if (partition === undefined || key === undefined || offset === undefined) {
            throw new Error(`Kafka did not report where a record of ${topic} was stored`);
          }
          const n = rank.get(key) ?? 0;
          rank.set(key, n + 1);
          positions[i] = { topic, partition, offset: Number(offset) + n };
        }
      }
      return positions;
    };

    /**
     * One try; when the producer turns out broken and nothing was stored
     * yet, one more on its replacement (the error may have been about
     * another topic it still carries).
     */
    const sendOnce = async (records: ReadonlyArray<OutRecord>, signal: AbortSignal) => {
      const instance = current;
      const progress = { stored: 0 };
      try {
        return await send(instance, records, signal, progress);
      } catch (e) {
        if (!hasErrorType(e, ...PRODUCER_BROKEN)) throw e;
        if (hasErrorType(e, "UNKNOWN_TOPIC_OR_PARTITION")) {
          forgetTopics([...new Set(records.map((r) => r.topic))]);
        }
        const fresh = replace(instance);
        if (progress.stored > 0 || signal.aborted) throw e;
        return await send(fresh, records, signal, progress);
      }
    };

    const append = (
      records: ReadonlyArray<OutRecord>,
    ): Effect.Effect<ReadonlyArray<Position>, StoreUnavailable> =>
      records.length === 0
        ? Effect.succeed([])
        : call("append", (signal) => sendOnce(records, signal), client.sendTimeout);

    return append;
  });
