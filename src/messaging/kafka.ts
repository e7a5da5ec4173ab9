/**
 * The MessageLog on Apache Kafka (2.8+ / KRaft) through kafkajs 2.2.4, with
 * the semantics of `log.ts`. The parts are in `./kafka/`:
 *
 * - `client.ts`: options, the client's configuration and log, bounded calls
 *   whose failures are StoreUnavailable (availability is described there).
 * - `admin.ts`: `ensureTopics` and `ping`, on one admin client.
 * - `append.ts`: the idempotent producer (acks from all in-sync replicas)
 *   and record positions.
 * - `consume.ts`: one consumer per group member, commits by the caller.
 * - `read.ts`: pages of a topic outside any group of the caller's.
 * - `reachability.ts`: once no broker accepts a connection (or the ping
 *   fails), calls fail at once until the cluster answers again.
 *
 * The layer builds without contacting the cluster (so also while it is
 * down); the clients connect on first use, reconnect by themselves, and
 * close with the layer. Bounds (each failing with StoreUnavailable):
 * `ping` 2 s; `append`, `ensureTopics`, `commit` the send timeout;
 * `consume` the send timeout to connect, then 30 s to join; `read` 30 s
 * (it joins a throwaway group: on a broker with the default
 * `group.initial.rebalance.delay.ms` a read takes 3 s or more). Closing a
 * consumer takes at most 10 s (20 s if it was still joining).
 */
import { Effect, Layer } from "effect";
import { makeAdmin } from "./kafka/admin.js";
import { makeAppend } from "./kafka/append.js";
import {
  type KafkaMessageLogConfigError,
  type KafkaMessageLogOptions,
  makeClient,
} from "./kafka/client.js";
import { makeConsume } from "./kafka/consume.js";
import { makeReachability } from "./kafka/reachability.js";
import { makeRead } from "./kafka/read.js";
import { MessageLog, type MessageLogShape } from "./log.js";

export {
  KafkaMessageLogConfigError,
  type KafkaMessageLogOptions,
} from "./kafka/client.js";

const make = (options: KafkaMessageLogOptions) =>
  Effect.gen(function* () {
    const client = yield* makeClient(options);
    const admin = yield* makeAdmin(client);
    const append = yield* makeAppend(client, admin.forget);
    const consume = makeConsume(client);
    const read = makeRead(client);
    const { gate, probe } = makeReachability();
    const log: MessageLogShape = {
      backend: "kafka",
      // Never gated: it is what finds the cluster back.
      ping: probe(admin.ping),
      ensureTopics: (topics) => gate(admin.ensureTopics(topics)),
      append: (records) => gate(append(records)),
      consume: (options, handlers) => gate(consume(options, handlers)),
      read: (topic, from, limit) => gate(read(topic, from, limit)),
      lag: () => [...client.lags.values()],
    };
    return log;
  });

export const KafkaMessageLog = {
  /** The log; builds without waiting for the cluster. Its clients close on release. */
  layer: (options: KafkaMessageLogOptions): Layer.Layer<MessageLog, KafkaMessageLogConfigError> =>
    Layer.scoped(MessageLog, make(options)),
};
