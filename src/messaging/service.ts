/**
 * The MessageBus port implemented once over the log contract, the choice of
 * backend (Kafka when FO_KAFKA_BROKERS is set, else the embedded log), and
 * the service's health, which follows the backend's.
 */
import { randomUUID } from "node:crypto";
import type { Meter } from "@opentelemetry/api";
import { Duration, Effect, Layer, Option } from "effect";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { MeshConfig } from "../config.js";
import { healthFromPing } from "../server/health.js";
import { Telemetry } from "../telemetry/pipeline.js";
import { traceBackend } from "../telemetry/spans.js";
import { makeDeadLetters } from "./dead-letters.js";
import { EmbeddedMessageLog } from "./embedded.js";
import { MessageLog, type MessageLogShape } from "./log.js";
import { MessageBus } from "./MessageBus.js";
import { makePublisher } from "./publisher.js";
import { makeRequests } from "./requests.js";
import { makeSubscriptions } from "./subscriptions.js";
import { makeTopics } from "./topics.js";

const MessageBusImpl = Layer.scoped(
  MessageBus,
  Effect.gen(function* () {
    const backend = yield* MessageLog;
    const log = yield* traceBackend(backend, "messaging", { "fo.backend": backend.backend });
    const { messaging: config } = yield* MeshConfig;
    const topics = makeTopics(config.topicPrefix);
    const limits = { maxPayloadBytes: config.maxPayloadBytes };
    const publisher = yield* makePublisher(log, topics, {
      ...limits,
      sendTimeout: config.sendTimeout,
      lingerMs: config.publishLingerMs,
    });
    const deadLetters = makeDeadLetters(log, topics);
    const subscriptions = yield* makeSubscriptions(
      log,
      topics,
      { maxSubscriptionsPerClient: config.maxSubscriptionsPerClient },
      deadLetters.deadLetter,
    );
    const requests = yield* makeRequests(
      log,
      topics,
      publisher,
      limits,
      `${config.kafkaClientId}.replies.${randomUUID()}`,
    );
    const telemetry = yield* Effect.serviceOption(Telemetry);
    if (Option.isSome(telemetry))
      observeBus(telemetry.value.meter, subscriptions.stats, backend.lag);
    return {
      sendCommand: publisher.sendCommand,
      publishEvent: publisher.publishEvent,
      publishBatch: publisher.publishBatch,
      subscribe: subscriptions.subscribe,
      consume: subscriptions.consume,
      ack: subscriptions.ack,
      nack: subscriptions.nack,
      request: requests.request,
      reply: requests.reply,
      listDeadLetters: deadLetters.listDeadLetters,
      replayDeadLetters: deadLetters.replayDeadLetters,
    };
  }),
);

/**
 * Gauges of this instance's subscriptions: how many are open, deliveries
 * awaiting an ack, and records read from the log but not finished yet (the
 * consumer-side backlog).
 */
const observeBus = (
  meter: Meter,
  stats: () => { subscriptions: number; inFlight: number; unfinished: number },
  lag: MessageLogShape["lag"],
) => {
  if (lag !== undefined) {
    meter
      .createObservableGauge("messaging.consumer.lag", {
        description:
          "Records after the last batch a group member of this instance fetched, per partition (Kafka)",
      })
      .addCallback((result) => {
        for (const l of lag())
          result.observe(l.lag, {
            "messaging.consumer.group.name": l.group,
            "messaging.destination.name": l.topic,
            "messaging.destination.partition.id": String(l.partition),
          });
      });
  }
  const subscriptions = meter.createObservableGauge("messaging.subscriptions", {
    description: "Open Subscribe streams on this mesh instance",
  });
  const inFlight = meter.createObservableGauge("messaging.deliveries.in_flight", {
    description: "Deliveries sent to subscribers and not yet acknowledged",
  });
  const unfinished = meter.createObservableGauge("messaging.backlog", {
    description: "Records read from the log and not yet acknowledged or dead-lettered",
  });
  meter.addBatchObservableCallback(
    (result) => {
      const now = stats();
      result.observe(subscriptions, now.subscriptions);
      result.observe(inFlight, now.inFlight);
      result.observe(unfinished, now.unfinished);
    },
    [subscriptions, inFlight, unfinished],
  );
};

const MessageBusHealth = healthFromPing(
  MessageBusService.typeName,
  Effect.flatMap(MessageLog, (log) => log.ping),
);

/**
 * The log backend chosen by configuration. kafkajs is only loaded when
 * brokers are configured.
 */
export const MessageLogLive = Layer.unwrapEffect(
  Effect.flatMap(
    MeshConfig,
    ({ messaging: m }): Effect.Effect<Layer.Layer<MessageLog, unknown>> =>
      m.kafkaBrokers.length === 0
        ? Effect.succeed(
            EmbeddedMessageLog.layer({
              partitions: m.partitions,
              retentionMs: Duration.toMillis(m.retention),
            }),
          )
        : Effect.promise(() => import("./kafka.js")).pipe(
            Effect.map(({ KafkaMessageLog }) =>
              KafkaMessageLog.layer({
                brokers: m.kafkaBrokers,
                clientId: m.kafkaClientId,
                partitions: m.partitions,
                replicationFactor: m.replicationFactor,
                retentionMs: Duration.toMillis(m.retention),
                sendTimeoutMs: Duration.toMillis(m.sendTimeout),
                maxRecordBytes: m.maxPayloadBytes,
              }),
            ),
          ),
  ),
);

/** MessageBus on a given log layer (tests pass their own). */
export const messageBusOn = <E, R>(log: Layer.Layer<MessageLog, E, R>) =>
  Layer.mergeAll(MessageBusImpl, MessageBusHealth).pipe(Layer.provideMerge(log));

export const MessageBusLive = messageBusOn(MessageLogLive);
