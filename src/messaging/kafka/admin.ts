/**
 * Topics and `ping`, on one admin client.
 *
 * `ensureTopics` creates the topics not known to exist yet, with the
 * configured partitions, replication factor, `retention.ms`, a
 * `max.message.bytes` fitting the largest record, and `LogAppendTime`
 * timestamps (the broker's append time); a topic that exists
 * already (created by another instance meanwhile, or before) counts as
 * created, whatever its settings. It returns once every partition of each
 * topic has a leader. Topics known to exist are remembered, so the call is
 * free for them afterwards; `forget` drops topics found missing later.
 *
 * The admin client is only given calls that do not add topics to the
 * metadata it keeps refreshing (kafkajs would fail every later call once
 * such a topic is deleted); `read` uses a client of its own.
 */
import { Effect } from "effect";
import type { Admin } from "kafkajs";
import type { StoreUnavailable } from "../log.js";
import { call, closeQuietly, type KafkaClient, PING_TIMEOUT, sharedConnect } from "./client.js";

/** Pause between looks at a new topic's partitions until each has a leader. */
const LEADER_POLL_MS = 100;

const allHaveLeaders = async (admin: Admin, topics: ReadonlyArray<string>) => {
  const { topics: found } = await admin.fetchTopicMetadata({ topics: [...topics] });
  return (
    found.length === topics.length &&
    found.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))
  );
};

export const makeAdmin = (client: KafkaClient) =>
  Effect.gen(function* () {
    const admin = client.kafka.admin();
    const connect = sharedConnect(() => admin.connect());
    yield* Effect.addFinalizer(() => closeQuietly("admin client", () => admin.disconnect()));

    const known = new Set<string>();
    const { options } = client;
    const configEntries = [
      { name: "retention.ms", value: String(Math.round(options.retentionMs)) },
      { name: "max.message.bytes", value: String(client.maxMessageBytes) },
      // A record's timestamp is when the broker appended it (the contract's), not the sender's clock.
      { name: "message.timestamp.type", value: "LogAppendTime" },
    ];

    const create = async (topics: ReadonlyArray<string>, signal: AbortSignal) => {
      await connect();
      // Resolves `false` when some existed already (kafkajs then skips waiting for leaders).
      await admin.createTopics({
        topics: topics.map((topic) => ({
          topic,
          numPartitions: options.partitions,
          replicationFactor: options.replicationFactor,
          configEntries,
        })),
        waitForLeaders: true,
        timeout: options.sendTimeoutMs,
      });
      while (!(await allHaveLeaders(admin, topics))) {
        signal.throwIfAborted();
        await new Promise((resolve) => setTimeout(resolve, LEADER_POLL_MS));
      }
    };

    const ensureTopics = (topics: ReadonlyArray<string>): Effect.Effect<void, StoreUnavailable> =>
      Effect.suspend(() => {
        const missing = [...new Set(topics)].filter((t) => !known.has(t));
        if (missing.length === 0) return Effect.void;
        return call("ensureTopics", (signal) => create(missing, signal), client.sendTimeout).pipe(
          Effect.tap(() => {
            for (const t of missing) known.add(t);
          }),
        );
      });

    const forget = (topics: ReadonlyArray<string>) => {
      for (const t of topics) known.delete(t);
    };

    const ping: Effect.Effect<void, StoreUnavailable> = call(
      "ping",
      async () => {
        await connect();
        await admin.describeCluster();
      },
      PING_TIMEOUT,
    );

    return { ensureTopics, forget, ping };
  });
