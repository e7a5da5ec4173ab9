/**
 * MessageBus vs direct kafkajs on the same Kafka broker:
 * - PublishEvent (1 KiB) vs `producer.send` of one record (idempotent, acks all),
 *   same closed-loop concurrency;
 * - PublishBatch of 100 vs `producer.send` of 100 records: messages per second;
 * - Subscribe + Ack (one Ack per batch of deliveries) vs an `eachBatch`
 *   consumer with manual commits: how fast each drains the same number of
 *   pre-published messages.
 *
 *   npm run bench:messagebus            # 5 rounds of 5 s per side
 *   npm run bench:messagebus -- --quick # a smoke run
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Kafka, logLevel } from "kafkajs";
import { MessageBusService } from "../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { up } from "../test/infra/index.js";
import { spawnMesh } from "../test/support/process.js";
import { comparePair, quick, report, throughput } from "./harness.js";

const BATCH = 100;
const DRAIN = quick ? 2_000 : 20_000;

const infra = await up({ log: (l) => console.error(l) });
const brokers = infra.kafkaBrokers.join(",");
const mesh = await spawnMesh({ FO_KAFKA_BROKERS: brokers });
const kafka = new Kafka({
  clientId: "bench-direct",
  brokers: [...infra.kafkaBrokers],
  logLevel: logLevel.NOTHING,
});
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
const admin = kafka.admin();
await producer.connect();
await admin.connect();
try {
  const bus = createClient(
    MessageBusService,
    createConnectTransport({ baseUrl: mesh.url, httpVersion: "2" }),
  );
  const run = randomUUID().slice(0, 8);
  const payload = new Uint8Array(1024).fill(120);
  const directTopic = `bench-direct-${run}`;
  await admin.createTopics({
    topics: [{ topic: directTopic, numPartitions: 3 }],
    waitForLeaders: true,
  });

  const meshType = `Bench.${run}`;
  let n = 0;
  const key = () => `k${n++ % 64}`;
  const [single, singleDirect] = await comparePair(
    () =>
      bus.publishEvent({
        event: {
          messageType: meshType,
          contentType: "application/octet-stream",
          payload,
          partitionKey: key(),
        },
      }),
    () =>
      producer.send({
        topic: directTopic,
        acks: -1,
        messages: [{ key: key(), value: Buffer.from(payload) }],
      }),
  );
  const [batch, batchDirect] = await comparePair(
    () =>
      bus.publishBatch({
        messages: Array.from({ length: BATCH }, () => ({
          kind: 2,
          messageType: meshType,
          contentType: "application/octet-stream",
          payload,
          partitionKey: key(),
        })),
      }),
    () =>
      producer.send({
        topic: directTopic,
        acks: -1,
        messages: Array.from({ length: BATCH }, () => ({
          key: key(),
          value: Buffer.from(payload),
        })),
      }),
  );
  const perMessage = (s: typeof batch) => ({ ...s, rps: s.rps * BATCH });

  // Consumption: drain DRAIN fresh messages each way.
  const drainType = `BenchDrain.${run}`;
  const drainTopic = `bench-drain-${run}`;
  await admin.createTopics({
    topics: [{ topic: drainTopic, numPartitions: 3 }],
    waitForLeaders: true,
  });
  for (let i = 0; i < DRAIN; i += BATCH) {
    const messages = Array.from({ length: BATCH }, () => ({
      key: key(),
      value: Buffer.from(payload),
    }));
    await producer.send({ topic: drainTopic, acks: -1, messages });
    await bus.publishBatch({
      messages: messages.map((m) => ({
        kind: 2,
        messageType: drainType,
        contentType: "application/octet-stream",
        payload,
        partitionKey: m.key,
      })),
    });
  }

  const meshDrain = async () => {
    const abort = new AbortController();
    let done = 0;
    let started = 0;
    // Acknowledged in batches, as a consumer of a batch would: one Ack per tick of deliveries.
    let pending: string[] = [];
    const acks: Promise<unknown>[] = [];
    const flush = () => {
      if (pending.length === 0) return;
      acks.push(bus.ack({ deliveryIds: pending }));
      pending = [];
    };
    for await (const item of bus.subscribe(
      { group: `bench-${run}`, eventTypes: [drainType], maxInFlight: 1000 },
      { signal: abort.signal },
    )) {
      if (item.event.case === "subscribed") {
        started = performance.now();
        continue;
      }
      if (item.event.case !== "delivery") continue;
      if (pending.length === 0) setImmediate(flush);
      pending.push(item.event.value.deliveryId);
      if (++done === DRAIN) break;
    }
    flush();
    await Promise.all(acks);
    const seconds = (performance.now() - started) / 1000;
    abort.abort();
    return throughput(done, seconds);
  };

  const directDrain = async () => {
    const consumer = kafka.consumer({ groupId: `bench-direct-${run}`, maxWaitTimeInMs: 100 });
    await consumer.connect();
    await consumer.subscribe({ topic: drainTopic, fromBeginning: true });
    let done = 0;
    let started = 0;
    const finished = new Promise<void>((resolve) => {
      consumer.on(consumer.events.GROUP_JOIN, () => {
        started = performance.now();
      });
      void consumer.run({
        autoCommit: false,
        partitionsConsumedConcurrently: 3,
        eachBatch: async ({ batch: b, resolveOffset }) => {
          for (const m of b.messages) {
            resolveOffset(m.offset);
            done++;
          }
          const last = b.messages[b.messages.length - 1];
          if (last)
            await consumer.commitOffsets([
              { topic: b.topic, partition: b.partition, offset: String(Number(last.offset) + 1) },
            ]);
          if (done >= DRAIN) resolve();
        },
      });
    });
    await finished;
    const seconds = (performance.now() - started) / 1000;
    await consumer.disconnect();
    return throughput(done, seconds);
  };
  const consumeDirect = await directDrain();
  const consumeMesh = await meshDrain();

  report("messagebus", "MessageBus via mesh vs direct kafkajs", [
    {
      name: "PublishEvent",
      meshLabel: "mesh PublishEvent 1 KiB (Connect, HTTP/2)",
      directLabel: "direct producer.send (1 record)",
      mesh: single,
      direct: singleDirect,
      target: { p50AddedMs: 0.3, ratio: 0 },
    },
    {
      name: "PublishBatch",
      meshLabel: `mesh PublishBatch ×${BATCH} (messages/s)`,
      directLabel: `direct producer.send ×${BATCH} (messages/s)`,
      mesh: perMessage(batch),
      direct: perMessage(batchDirect),
      target: { ratio: 0.9 },
    },
    {
      name: "Consume",
      meshLabel: `mesh Subscribe + batched Ack (${DRAIN} messages)`,
      directLabel: `direct eachBatch + commit (${DRAIN} messages)`,
      mesh: consumeMesh,
      direct: consumeDirect,
      target: { ratio: 0.7 },
    },
  ]);
  await admin.deleteTopics({ topics: [directTopic, drainTopic] }).catch(() => {});
} finally {
  await producer.disconnect();
  await admin.disconnect();
  mesh.child.kill("SIGTERM");
  await mesh.exited;
}
process.exit(0);
