/**
 * MessageBus through the mesh (Kafka adapter) vs direct kafkajs on the same
 * broker, both sides loaded from the bench process (the baselines are driver
 * calls):
 * - PublishEvent of 1 KiB vs `producer.send` of one record (idempotent, acks all),
 *   each side 16 concurrent callers in the throughput phase (the mesh may
 *   gather them into shared produce requests, see FO_PUBLISH_LINGER_MS;
 *   kafkajs sends each on its own);
 * - PublishBatch of 100 vs `producer.send` of 100 records, in messages per second;
 * - Consume (the bidi stream: batches of deliveries in, one settle request per
 *   batch out) and Subscribe + Ack (batched responses, one unary Ack per
 *   batch), each vs an `eachBatch` consumer with manual commits: each round a
 *   fresh consumer group drains the same pre-published messages from the
 *   start, both sides on the same broker under the same load.
 *
 * Beside each of the first three, its floor: the same pair with a bare
 * grpc-js server (bench/bare-grpcjs.ts) in the mesh's place in front of
 * kafkajs, and for PublishBatch also in front of @platformatic/kafka writing
 * the mesh's records.
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { Kafka, logLevel } from "kafkajs";
import {
  type ConsumeRequest,
  ConsumeRequestSchema,
  MessageBusService,
} from "../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { MessageKind } from "../gen/floworchestrator/messaging/v1/message_pb.js";
import { makeTopics } from "../src/messaging/topics.js";
import { pushable } from "../test/support/pushable.js";
import {
  comparePair,
  type PairGroup,
  type PairResult,
  profiling,
  quick,
  type Sample,
  type Side,
  type SideResult,
  settings,
} from "./harness.js";
import { nativePort, startBareGrpcJs, startMesh } from "./servers.js";
import { grpcJsTransport, NODE_CLIENT, nodeSide } from "./tools.js";

const BATCH = 100;
/** Messages each consumption round drains. */
const DRAIN = quick ? 2_000 : 20_000;
/** Deliveries unsettled at once on the mesh sides: the most a subscription may have. */
const IN_FLIGHT = 1000;

/** Per call → per message, for PublishBatch. */
const perMessage = (r: PairResult, k: number): PairResult => {
  const scale = (s: SideResult): SideResult => ({
    ...s,
    throughput: { ...s.throughput, count: s.throughput.count * k, rps: s.throughput.rps * k },
    ...(s.cpuPer1k === undefined ? {} : { cpuPer1k: s.cpuPer1k / k }),
  });
  return { ...r, a: scale(r.a), ...(r.b === undefined ? {} : { b: scale(r.b) }) };
};

const wanted = (name: string) => profiling.pair === undefined || profiling.pair === name;

export const messagebus: PairGroup = {
  id: "messagebus",
  title: "MessageBus",
  infra: true,
  run: async ({ infra, profileDir }) => {
    if (infra === undefined) throw new Error("needs the real backends");
    const brokers = infra.kafkaBrokers.join(",");
    const mesh = await startMesh({ FO_KAFKA_BROKERS: brokers }, profileDir);
    const kafka = new Kafka({
      clientId: "bench-direct",
      brokers: [...infra.kafkaBrokers],
      logLevel: logLevel.NOTHING,
    });
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    const admin = kafka.admin();
    await producer.connect();
    await admin.connect();
    const run = randomUUID().slice(0, 8);
    const directTopic = `bench-direct-${run}`;
    // The floors: a bare grpc-js server in front of kafkajs (bench/bare-grpcjs.ts).
    const [bare, barePlatformatic, bareContract] = await Promise.all([
      startBareGrpcJs({ FO_KAFKA_BROKERS: brokers, BARE_KAFKA_TOPIC: directTopic }),
      startBareGrpcJs({
        FO_KAFKA_BROKERS: brokers,
        BARE_KAFKA_TOPIC: directTopic,
        BARE_KAFKA_CLIENT: "platformatic",
      }),
      startBareGrpcJs({
        FO_KAFKA_BROKERS: brokers,
        BARE_KAFKA_TOPIC: directTopic,
        BARE_CONSUME_CONTRACT: "1",
      }),
    ]);
    try {
      // The servers here are grpc-js, which compress no response unless configured to: the
      // batches the consumption pairs read come uncompressed, as the kafkajs side reads them.
      const bus = createClient(MessageBusService, grpcJsTransport(nativePort(mesh).url));
      const bareBus = createClient(MessageBusService, grpcJsTransport(bare.url));
      const barePlatformaticBus = createClient(
        MessageBusService,
        grpcJsTransport(barePlatformatic.url),
      );
      const bareContractBus = createClient(MessageBusService, grpcJsTransport(bareContract.url));
      const payload = new Uint8Array(1024).fill(120);
      await admin.createTopics({
        topics: [{ topic: directTopic, numPartitions: 3 }],
        waitForLeaders: true,
      });
      const meshType = `Bench.${run}`;
      let n = 0;
      const key = () => `k${n++ % 64}`;
      const mesh1 = (label: string, call: () => Promise<unknown>) =>
        nodeSide({ label, tool: NODE_CLIENT, pids: [mesh.pid], call });
      const bare1 = (label: string, call: () => Promise<unknown>) =>
        nodeSide({ label, tool: NODE_CLIENT, pids: [bare.pid], call });
      const direct = (label: string, call: () => Promise<unknown>) =>
        nodeSide({ label, tool: "Node: kafkajs", call });

      const event = () => ({
        event: {
          messageType: meshType,
          contentType: "application/octet-stream",
          payload,
          partitionKey: key(),
        },
      });
      const sendOne = direct("direct send, 1 record", () =>
        producer.send({
          topic: directTopic,
          acks: -1,
          messages: [{ key: key(), value: Buffer.from(payload) }],
        }),
      );
      const single = await comparePair(
        "MessageBus: PublishEvent 1 KiB",
        mesh1("mesh PublishEvent", () => bus.publishEvent(event())),
        sendOne,
      );
      const singleFloor = await comparePair(
        "Floor: PublishEvent via a bare grpc-js server",
        bare1("bare grpc-js PublishEvent", () => bareBus.publishEvent(event())),
        sendOne,
      );
      const events = () => ({
        messages: Array.from({ length: BATCH }, () => ({
          kind: MessageKind.EVENT,
          messageType: meshType,
          contentType: "application/octet-stream",
          payload,
          partitionKey: key(),
        })),
      });
      const sendBatch = direct(`direct send, ${BATCH} records`, () =>
        producer.send({
          topic: directTopic,
          acks: -1,
          messages: Array.from({ length: BATCH }, () => ({
            key: key(),
            value: Buffer.from(payload),
          })),
        }),
      );
      const batch = await comparePair(
        "MessageBus: PublishBatch ×100",
        mesh1(`mesh PublishBatch ×${BATCH}`, () => bus.publishBatch(events())),
        sendBatch,
      );
      const batchFloor = await comparePair(
        "Floor: PublishBatch ×100 via a bare grpc-js server",
        bare1(`bare grpc-js PublishBatch ×${BATCH}`, () => bareBus.publishBatch(events())),
        sendBatch,
      );
      const batchPlatformatic = await comparePair(
        "Floor: PublishBatch ×100 via bare grpc-js and @platformatic/kafka",
        nodeSide({
          label: `bare grpc-js + platformatic PublishBatch ×${BATCH}`,
          tool: NODE_CLIENT,
          pids: [barePlatformatic.pid],
          call: () => barePlatformaticBus.publishBatch(events()),
        }),
        sendBatch,
      );

      // Consumption: DRAIN messages published once through the mesh, read by both sides
      // from the mesh's topic: the same records (CloudEvents headers included), so the
      // pair measures what the mesh adds to the driver reading them.
      const drainType = `BenchDrain.${run}`;
      const drainTopic = makeTopics("fo.").event(drainType);
      const consumeName = "MessageBus: Consume (bidi, batched) vs eachBatch + commit, 1 KiB";
      const subscribeName =
        "MessageBus: Subscribe + Ack (server stream, batched) vs eachBatch + commit, 1 KiB";
      if (wanted(consumeName) || wanted(subscribeName)) {
        for (let i = 0; i < DRAIN; i += BATCH) {
          await bus.publishBatch({
            messages: Array.from({ length: BATCH }, () => ({
              kind: MessageKind.EVENT,
              messageType: drainType,
              contentType: "application/octet-stream",
              payload,
              partitionKey: key(),
            })),
          });
        }
      }
      let rounds = 0;
      // Subscribe, batched: one unary Ack per response, as a browser's batch consumer would.
      const subscribeDrain = async (): Promise<Sample> => {
        const abort = new AbortController();
        let done = 0;
        let started = 0;
        const acks: Promise<unknown>[] = [];
        for await (const item of bus.subscribe(
          {
            group: `bench-${run}-${rounds++}`,
            eventTypes: [drainType],
            maxInFlight: IN_FLIGHT,
            maxBatchSize: IN_FLIGHT,
          },
          { signal: abort.signal },
        )) {
          if (item.event.case === "subscribed") {
            started = performance.now();
            continue;
          }
          if (item.event.case !== "deliveries") continue;
          const batch = item.event.value.deliveries;
          acks.push(bus.ack({ deliveryIds: batch.map((d) => d.deliveryId) }));
          done += batch.length;
          // Leaving the loop cancels the stream: the last acks must have landed by then.
          if (done >= DRAIN) {
            await Promise.all(acks);
            break;
          }
        }
        const seconds = (performance.now() - started) / 1000;
        abort.abort();
        return { latencies: [], count: done, seconds, errors: 0 };
      };
      // Consume: one settle request per batch, on the stream itself.
      const consumeDrain = async (client = bus): Promise<Sample> => {
        const requests = pushable<ConsumeRequest>();
        requests.push(
          create(ConsumeRequestSchema, {
            request: {
              case: "subscribe",
              value: {
                group: `bench-${run}-${rounds++}`,
                eventTypes: [drainType],
                maxInFlight: IN_FLIGHT,
              },
            },
          }),
        );
        let done = 0;
        let started = 0;
        for await (const item of client.consume(requests.iterable)) {
          if (item.response.case === "subscribed") {
            started = performance.now();
            continue;
          }
          if (item.response.case !== "deliveries") continue;
          const batch = item.response.value.deliveries;
          requests.push(
            create(ConsumeRequestSchema, {
              request: { case: "settle", value: { ackIds: batch.map((d) => d.deliveryId) } },
            }),
          );
          done += batch.length;
          // The last acks go out with the half-close; the mesh settles them before it ends.
          if (done >= DRAIN) requests.end();
        }
        const seconds = (performance.now() - started) / 1000;
        return { latencies: [], count: done, seconds, errors: 0 };
      };
      const directDrain = async (): Promise<Sample> => {
        const consumer = kafka.consumer({
          groupId: `bench-direct-${run}-${rounds++}`,
          maxWaitTimeInMs: 100,
        });
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
                  {
                    topic: b.topic,
                    partition: b.partition,
                    offset: String(Number(last.offset) + 1),
                  },
                ]);
              if (done >= DRAIN) resolve();
            },
          });
        });
        await finished;
        const seconds = (performance.now() - started) / 1000;
        await consumer.disconnect();
        return { latencies: [], count: done, seconds, errors: 0 };
      };
      // Throughput only: a drain is a fixed amount of work, not a timed run.
      const drainSide = (
        label: string,
        tool: string,
        pids: number[],
        drain: () => Promise<Sample>,
      ): Side => ({
        label,
        tool,
        pids,
        throughput: drain,
      });
      const eachBatch = drainSide("direct eachBatch + commit", "Node: kafkajs", [], directDrain);
      const consume = await comparePair(
        consumeName,
        drainSide("mesh Consume (bidi)", NODE_CLIENT, [mesh.pid], () => consumeDrain()),
        eachBatch,
      );
      const consumeFloor = await comparePair(
        "Floor: Consume via a bare grpc-js server",
        drainSide("bare grpc-js Consume", NODE_CLIENT, [bare.pid], () => consumeDrain(bareBus)),
        eachBatch,
      );
      const consumePlatformatic = await comparePair(
        "Floor: Consume via bare grpc-js and @platformatic/kafka",
        drainSide("bare grpc-js + platformatic Consume", NODE_CLIENT, [barePlatformatic.pid], () =>
          consumeDrain(barePlatformaticBus),
        ),
        eachBatch,
      );
      const consumeContract = await comparePair(
        "Floor: Consume with the mesh's deliveries via a bare grpc-js server",
        drainSide("bare grpc-js Consume, mesh's deliveries", NODE_CLIENT, [bareContract.pid], () =>
          consumeDrain(bareContractBus),
        ),
        eachBatch,
      );
      const subscribe = await comparePair(
        subscribeName,
        drainSide("mesh Subscribe + Ack, batched", NODE_CLIENT, [mesh.pid], subscribeDrain),
        eachBatch,
      );
      const floorNote =
        "Context, no target: the least a gRPC hop in front of kafkajs costs here. bench/bare-grpcjs.ts";
      return [
        {
          name: "MessageBus: PublishEvent 1 KiB",
          result: single,
          target: { minRatio: 0.5, maxAddedP50: 0.3 },
          note: `throughput: ${settings.concurrency} concurrent PublishEvent calls vs ${settings.concurrency} concurrent kafkajs single sends.`,
        },
        {
          name: "Floor: PublishEvent via a bare grpc-js server",
          result: singleFloor,
          note: `${floorNote} sends each call's message with kafkajs as the baseline does (key and value, no headers, no shared appends) and answers with its id and partition: no checks, no Effect, no telemetry.`,
        },
        {
          name: "MessageBus: PublishBatch ×100",
          result: perMessage(batch, BATCH),
          target: { minRatio: 0.7 },
          unit: "msg/s",
          note: `throughput and CPU per message; latencies are per call of ${BATCH} messages, at the rate shown in calls/s.`,
        },
        {
          name: "Floor: PublishBatch ×100 via a bare grpc-js server",
          result: perMessage(batchFloor, BATCH),
          unit: "msg/s",
          note: `${floorNote} sends each call's ${BATCH} messages in one kafkajs send as the baseline does (key and value, no headers) and answers with their ids and partition.`,
        },
        {
          name: "Floor: PublishBatch ×100 via bare grpc-js and @platformatic/kafka",
          result: perMessage(batchPlatformatic, BATCH),
          unit: "msg/s",
          note: `${floorNote} with @platformatic/kafka (the fastest Kafka client for Node here, bench/kafka-floor.ts) in place of kafkajs, writing the records the mesh writes: value, key and the eight CloudEvents headers.`,
        },
        {
          name: consumeName,
          result: consume,
          target: { minRatio: 0.5 },
          unit: "msg/s",
          note: `each round a new consumer group drains the same ${DRAIN.toLocaleString("en-US")} 1 KiB messages from the start, published once through the mesh and read by both sides from its topic (the same records, CloudEvents headers included) (timed from the subscription's first item, or the kafkajs group join); the mesh side (max_in_flight ${IN_FLIGHT}) settles each response's batch with one request on the stream.`,
        },
        {
          name: "Floor: Consume via a bare grpc-js server",
          result: consumeFloor,
          unit: "msg/s",
          note: `${floorNote} runs a kafkajs eachBatch consumer per Consume stream, sends each fetched batch as one response (key, value and position per delivery, the CloudEvents headers not read) and commits it when the client's next settle arrives.`,
        },
        {
          name: "Floor: Consume via bare grpc-js and @platformatic/kafka",
          result: consumePlatformatic,
          unit: "msg/s",
          note: `${floorNote} with @platformatic/kafka in place of kafkajs: its message stream, flowing, the messages of one event-loop turn sent as one response, paused while ${IN_FLIGHT} deliveries wait for their settle (the mesh side's max_in_flight); each response's last offsets are committed when its settle arrives; key, value and position per delivery.`,
        },
        {
          name: "Floor: Consume with the mesh's deliveries via a bare grpc-js server",
          result: consumeContract,
          unit: "msg/s",
          note: `${floorNote} with BARE_CONSUME_CONTRACT=1: as the kafkajs floor above, but each delivery is what the mesh's contract asks for: the Envelope the mesh's own mapping makes of the record and its CloudEvents headers (src/messaging/envelope.ts), under a delivery id of its own, written by the mesh's delivery encoder (src/messaging/wire.ts); a batch is committed once each of its ids was acknowledged. No dispatcher (ordering per member, redelivery, ack deadlines, retries), no Effect, no telemetry.`,
        },
        {
          name: subscribeName,
          result: subscribe,
          target: { minRatio: 0.25 },
          unit: "msg/s",
          note: `as the Consume pair, over Subscribe with max_batch_size ${IN_FLIGHT}: the mesh side acknowledges each response's batch with one unary Ack call.`,
        },
      ];
    } finally {
      await Promise.all([bare.stop(), barePlatformatic.stop(), bareContract.stop()]);
      await mesh.stop();
      // The mesh's topics too (events, its groups' retry topics): all carry the run's id,
      // so a run leaves nothing behind in a broker others use.
      await admin
        .listTopics()
        .then((topics) => admin.deleteTopics({ topics: topics.filter((t) => t.includes(run)) }))
        .catch(() => {});
      await producer.disconnect();
      await admin.disconnect();
    }
  },
};
