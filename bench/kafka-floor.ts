/**
 * The floor under the MessageBus pairs: how fast the Kafka clients themselves
 * go on this broker, without the mesh. kafkajs (the adapter's driver) against
 * `@platformatic/kafka` (pure JS, built for throughput), on the records the
 * pairs use (1 KiB values, keys `k0`…`k63`, 3 partitions), each with no
 * headers (as the produce pairs' kafkajs side writes them) and with the eight
 * CloudEvents headers every mesh record carries:
 *
 * - produce: 16 concurrent callers each sending 100 records at a time
 *   (idempotent, acks from all replicas), as "PublishBatch ×100" does;
 * - consume: a fresh group drains the same pre-published records from the
 *   start, committing each batch (kafkajs: `eachBatch` + `commitOffsets`;
 *   platformatic: its message stream, a commit every `COMMIT_EVERY`).
 *
 * Both clients run in this process, one after the other, interleaved over
 * rounds; the figures are msg/s and this process's CPU per message.
 *
 *   FO_KAFKA_BROKERS=127.0.0.1:9092 npx tsx bench/kafka-floor.ts [rounds]
 *
 * Not part of `npm run bench`: it answers "is the driver the ceiling?".
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import {
  Consumer,
  MessagesStreamModes,
  Producer,
  stringDeserializer,
  stringSerializer,
} from "@platformatic/kafka";
import { Kafka, logLevel } from "kafkajs";

const brokers = (process.env.FO_KAFKA_BROKERS ?? "127.0.0.1:9092").split(",");
const rounds = Number(process.argv[2] ?? 3);
const BATCH = 100;
const CALLERS = 16;
const PRODUCE_SECONDS = 4;
const DRAIN = 20_000;
/** The platformatic consumer commits this often (kafkajs commits per fetched partition batch). */
const COMMIT_EVERY = 500;

const value = Buffer.alloc(1024, 120);
/** The headers a mesh record carries (src/messaging/envelope.ts `toRecord`). */
const ceHeaders = (): Record<string, string> => ({
  "content-type": "application/octet-stream",
  ce_id: randomUUID(),
  ce_time: new Date().toISOString(),
  ce_type: "Bench.floor",
  ce_source: "floworchestrator-mesh",
  ce_specversion: "1.0",
  ce_partitionkey: "k1",
  ce_messagekind: "event",
});

interface Figure {
  readonly msgs: number;
  readonly seconds: number;
  readonly cpuMicros: number;
}
const show = (label: string, all: ReadonlyArray<Figure>) => {
  const msgs = all.reduce((s, f) => s + f.msgs, 0);
  const seconds = all.reduce((s, f) => s + f.seconds, 0);
  const cpu = all.reduce((s, f) => s + f.cpuMicros, 0);
  console.log(
    `${label.padEnd(44)} ${(msgs / seconds).toFixed(0).padStart(7)} msg/s  ${(cpu / msgs).toFixed(1).padStart(6)} µs CPU/msg`,
  );
};
const timed = async (run: () => Promise<number>): Promise<Figure> => {
  const cpu = process.cpuUsage();
  const started = performance.now();
  const msgs = await run();
  const used = process.cpuUsage(cpu);
  return {
    msgs,
    seconds: (performance.now() - started) / 1000,
    cpuMicros: used.user + used.system,
  };
};

const run = randomUUID().slice(0, 8);
const kafka = new Kafka({ clientId: "floor", brokers, logLevel: logLevel.NOTHING });
const admin = kafka.admin();
await admin.connect();
const topics = {
  plain: `floor-plain-${run}`,
  headers: `floor-headers-${run}`,
  produce: `floor-produce-${run}`,
};
await admin.createTopics({
  topics: Object.values(topics).map((topic) => ({ topic, numPartitions: 3 })),
  waitForLeaders: true,
});

const kjsProducer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
await kjsProducer.connect();
const pltProducer = new Producer({
  clientId: "floor-plt",
  bootstrapBrokers: brokers,
  idempotent: true,
  acks: -1,
  serializers: {
    key: stringSerializer,
    headerKey: stringSerializer,
    headerValue: stringSerializer,
  },
});

let n = 0;
const key = () => `k${n++ % 64}`;
const records = (headers: boolean) =>
  Array.from({ length: BATCH }, () => ({
    key: key(),
    value,
    ...(headers ? { headers: ceHeaders() } : {}),
  }));

const closedLoop = async (send: () => Promise<unknown>) => {
  let sent = 0;
  const until = performance.now() + PRODUCE_SECONDS * 1000;
  await Promise.all(
    Array.from({ length: CALLERS }, async () => {
      while (performance.now() < until) {
        await send();
        sent += BATCH;
      }
    }),
  );
  return sent;
};
const kjsSend = (headers: boolean) => () =>
  kjsProducer.send({ topic: topics.produce, acks: -1, messages: records(headers) });
const pltSend = (headers: boolean) => () =>
  pltProducer.send({
    messages: records(headers).map((r) => ({ ...r, topic: topics.produce })),
  });

// The records the drains read, written once.
for (let i = 0; i < DRAIN; i += BATCH) {
  await kjsProducer.send({ topic: topics.plain, acks: -1, messages: records(false) });
  await kjsProducer.send({ topic: topics.headers, acks: -1, messages: records(true) });
}

let groups = 0;
/** kafkajs, as bench/messagebus.ts's baseline: eachBatch, a commit per batch. */
const kjsDrain = async (topic: string): Promise<Figure> => {
  const consumer = kafka.consumer({ groupId: `floor-${run}-${groups++}`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let done = 0;
  let first: { at: number; cpu: NodeJS.CpuUsage } | undefined;
  const finished = new Promise<Figure>((resolve) => {
    void consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: 3,
      eachBatch: async ({ batch, resolveOffset }) => {
        first ??= { at: performance.now(), cpu: process.cpuUsage() };
        for (const m of batch.messages) {
          resolveOffset(m.offset);
          // What the mesh needs of a record: its headers as text.
          for (const h in m.headers) String(m.headers[h]);
          done++;
        }
        const last = batch.messages[batch.messages.length - 1];
        if (last)
          await consumer.commitOffsets([
            { topic, partition: batch.partition, offset: String(Number(last.offset) + 1) },
          ]);
        if (done >= DRAIN && first) {
          const used = process.cpuUsage(first.cpu);
          resolve({
            msgs: done,
            seconds: (performance.now() - first.at) / 1000,
            cpuMicros: used.user + used.system,
          });
        }
      },
    });
  });
  const figure = await finished;
  await consumer.disconnect();
  return figure;
};

/** platformatic: its message stream from the earliest offset, a commit every COMMIT_EVERY. */
const pltDrain = async (topic: string): Promise<Figure> => {
  const consumer = new Consumer({
    clientId: "floor-plt",
    groupId: `floor-${run}-${groups++}`,
    bootstrapBrokers: brokers,
    deserializers: {
      key: stringDeserializer,
      headerKey: stringDeserializer,
      headerValue: stringDeserializer,
    },
    maxWaitTime: 100,
  });
  const stream = await consumer.consume({
    topics: [topic],
    mode: MessagesStreamModes.EARLIEST,
    autocommit: false,
  });
  let done = 0;
  let first: { at: number; cpu: NodeJS.CpuUsage } | undefined;
  const next = new Map<number, { offset: bigint; leaderEpoch: number }>();
  const figure = await new Promise<Figure>((resolve, reject) => {
    stream.on("error", reject);
    stream.on("data", (message) => {
      first ??= { at: performance.now(), cpu: process.cpuUsage() };
      next.set(message.partition, {
        offset: message.offset + 1n,
        leaderEpoch: message.leaderEpoch,
      });
      done++;
      if (done % COMMIT_EVERY !== 0 && done < DRAIN) return;
      const offsets = [...next].map(([partition, o]) => ({ topic, partition, ...o }));
      next.clear();
      stream.pause();
      consumer.commit({ offsets }).then(() => {
        if (done < DRAIN) {
          stream.resume();
          return;
        }
        const used = process.cpuUsage((first as { cpu: NodeJS.CpuUsage }).cpu);
        resolve({
          msgs: done,
          seconds: (performance.now() - (first as { at: number }).at) / 1000,
          cpuMicros: used.user + used.system,
        });
      }, reject);
    });
  });
  await stream.close();
  await consumer.close(true);
  return figure;
};

const results = new Map<string, Figure[]>();
const add = (label: string, f: Figure) => results.set(label, [...(results.get(label) ?? []), f]);
try {
  await timed(() => closedLoop(kjsSend(true)));
  await timed(() => closedLoop(pltSend(true)));
  for (let r = 0; r < rounds; r++) {
    for (const headers of [false, true]) {
      const h = headers ? "CE headers" : "no headers";
      add(`produce ×${BATCH}, kafkajs, ${h}`, await timed(() => closedLoop(kjsSend(headers))));
      add(`produce ×${BATCH}, platformatic, ${h}`, await timed(() => closedLoop(pltSend(headers))));
      const topic = headers ? topics.headers : topics.plain;
      add(`consume + commit, kafkajs, ${h}`, await kjsDrain(topic));
      add(`consume + commit, platformatic, ${h}`, await pltDrain(topic));
    }
  }
  for (const [label, all] of [...results].sort(([a], [b]) => a.localeCompare(b))) show(label, all);
} finally {
  await pltProducer.close();
  await kjsProducer.disconnect();
  await admin.deleteTopics({ topics: Object.values(topics) }).catch(() => {});
  await admin.disconnect();
}
process.exit(0);
