/**
 * A bare `@grpc/grpc-js` server, no policy, no telemetry, no Effect,
 * protobuf-es for the messages (as the mesh uses): the baseline of the
 * native gRPC pairs, and the floors of the pairs whose baseline is a driver.
 * It answers grpc.health.v1.Health/Check (traced with `BARE_OTLP_ENDPOINT`),
 * and MemoryManager Read (and Write, with Hazelcast only): with `FO_HAZELCAST_MEMBERS` set, by one `IMap.get`
 * of the address on the mesh's entries map (what the mesh's Read must at
 * least do; with `BARE_EFFECT=1` that get runs in an Effect fiber forked per
 * call, the least an Effect handler costs); otherwise with a fixed entry of `BARE_READ_BYTES` bytes (what
 * the embedded store answers from memory). With `FO_MONGODB_URI`, DataStore
 * GetEntity by one findOne; with `FO_KAFKA_BROKERS`, MessageBus
 * PublishEvent, PublishBatch and Consume through a Kafka client (kafkajs, or
 * @platformatic/kafka with `BARE_KAFKA_CLIENT=platformatic`; with
 * `BARE_CONSUME_CONTRACT=1`, Consume keeps the mesh's delivery contract, see
 * `contract`). Run as its own process. Prints one line: "listening on <url>".
 */

import { randomBytes, randomUUID } from "node:crypto";
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ROOT_CONTEXT, SpanKind, type TextMapGetter } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import {
  MessagesStreamModes,
  Consumer as PlatformaticConsumer,
  type Message as PlatformaticMessage,
  Producer as PlatformaticProducer,
  stringDeserializer,
  stringSerializer,
} from "@platformatic/kafka";
import { Effect, Exit, Runtime } from "effect";
import { Client } from "hazelcast-client";
import { Kafka, logLevel } from "kafkajs";
import { MongoClient } from "mongodb";
import {
  DataStoreService,
  GetEntityRequestSchema,
  GetEntityResponseSchema,
} from "../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import {
  MemoryManagerService,
  ReadRequestSchema,
  ReadResponseSchema,
  WriteRequestSchema,
  WriteResponseSchema,
} from "../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import {
  ConsumeRequestSchema,
  ConsumeResponseSchema,
  MessageBusService,
  PublishBatchRequestSchema,
  PublishBatchResponseSchema,
  PublishEventRequestSchema,
  PublishEventResponseSchema,
} from "../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import type { Envelope } from "../gen/floworchestrator/messaging/v1/message_pb.js";
import {
  Health,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../gen/grpc/health/v1/health_pb.js";
import { fromRecord } from "../src/messaging/envelope.js";
import { fromMessage } from "../src/messaging/kafka/records.js";
import { makeTopics } from "../src/messaging/topics.js";
import { encodeDeliveries } from "../src/messaging/wire.js";

const members = process.env.FO_HAZELCAST_MEMBERS;
const map =
  members === undefined
    ? undefined
    : await (
        await Client.newHazelcastClient({
          clusterName: process.env.FO_HAZELCAST_CLUSTER ?? "dev",
          network: { clusterMembers: members.split(",") },
          properties: { "hazelcast.logging.level": "OFF" },
        })
      ).getMap<string, Buffer>(process.env.BARE_HAZELCAST_MAP ?? "bench-bare-entries");

const inFiber = process.env.BARE_EFFECT === "1";
const runFork = Runtime.runFork(Runtime.defaultRuntime);
const fixed = Buffer.alloc(Number(process.env.BARE_READ_BYTES ?? 1024), 7);
/** A response message as the wire carries it. */
const encoded = <S extends DescMessage>(schema: S, value: MessageInitShape<S>) =>
  Buffer.from(toBinary(schema, create(schema, value)));
const serving = encoded(HealthCheckResponseSchema, {
  status: HealthCheckResponse_ServingStatus.SERVING,
});
const pass = (b: Buffer) => b;
const unary = (path: string) => ({
  path,
  requestStream: false,
  responseStream: false,
  requestSerialize: pass,
  requestDeserialize: pass,
  responseSerialize: pass,
  responseDeserialize: pass,
});

/**
 * With `BARE_OTLP_ENDPOINT`, Health/Check is traced as cheaply as the OTel SDK allows (the
 * floor of the tracing pair): the caller's traceparent extracted, one server span with the
 * RPC attributes and status code, a batch processor exporting OTLP/HTTP protobuf.
 */
const otlp = process.env.BARE_OTLP_ENDPOINT;
const tracer =
  otlp === undefined
    ? undefined
    : new BasicTracerProvider({
        spanProcessors: [
          new BatchSpanProcessor(new OTLPTraceExporter({ url: `${otlp}/v1/traces` })),
        ],
      }).getTracer("bare-grpcjs");
const propagator = new W3CTraceContextPropagator();
const fromMetadata: TextMapGetter<grpc.Metadata> = {
  keys: (m) => Object.keys(m.getMap()),
  get: (m, key) => m.get(key).map(String),
};
const server = new grpc.Server();
server.addService(
  { Check: unary(`/${Health.typeName}/Check`) },
  {
    Check: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      if (tracer === undefined) return callback(null, serving);
      const span = tracer.startSpan(
        `${Health.typeName}/Check`,
        {
          kind: SpanKind.SERVER,
          attributes: {
            "rpc.system": "grpc",
            "rpc.service": Health.typeName,
            "rpc.method": "Check",
          },
        },
        propagator.extract(ROOT_CONTEXT, call.metadata, fromMetadata),
      );
      callback(null, serving);
      span.setAttribute("rpc.grpc.status_code", 0);
      span.end();
    },
  },
);
server.addService(
  {
    Read: unary(`/${MemoryManagerService.typeName}/Read`),
    Write: unary(`/${MemoryManagerService.typeName}/Write`),
  },
  {
    /**
     * The Hazelcast calls the mesh's Write makes, and nothing else: the key's
     * lock, its entry view, the set with TTL and max idle, and the unlock not
     * waited for (see src/memory/hazelcast/key-lock.ts). No record, no checks.
     */
    Write: async (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const req = fromBinary(WriteRequestSchema, call.request);
      const address = req.address?.kind.case === "text" ? req.address.kind.value : "";
      if (map === undefined) return cb({ code: grpc.status.UNIMPLEMENTED });
      try {
        if (!(await map.tryLock(address, 2_000, 15_000))) return cb({ code: grpc.status.ABORTED });
        const view = await map.getEntryView(address);
        await map.set(address, Buffer.from(req.data), 3_600_000, 3_600_000);
        map.unlock(address).catch(() => {});
        const version = BigInt(Number(view?.version ?? 0) + 1);
        cb(
          null,
          encoded(WriteResponseSchema, {
            entry: { address, version, sizeBytes: BigInt(req.data.length) },
          }),
        );
      } catch {
        cb({ code: grpc.status.UNAVAILABLE });
      }
    },
    Read: async (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const ref = fromBinary(ReadRequestSchema, call.request).address?.kind;
      const address = ref?.case === "text" ? ref.value : "";
      const answer = (stored: Buffer | null) => {
        const data = stored instanceof Buffer ? stored : Buffer.alloc(0);
        const entry = { address, version: 1n, sizeBytes: BigInt(data.length) };
        cb(null, encoded(ReadResponseSchema, { data, entry }));
      };
      if (map === undefined) return answer(fixed);
      if (!inFiber) return answer(await map.get(address));
      // The same get as an Effect handler runs it: one fiber per call, the call an Effect.async.
      const fiber = runFork(
        Effect.async<Buffer | null>((resume) => {
          map.get(address).then(
            (v) => resume(Effect.succeed(v)),
            (e) => resume(Effect.die(e)),
          );
        }),
      );
      fiber.addObserver((exit) =>
        Exit.isSuccess(exit) ? answer(exit.value) : cb({ code: grpc.status.INTERNAL }),
      );
    },
  },
);
const mongoUri = process.env.FO_MONGODB_URI;
if (mongoUri !== undefined) {
  const entities = new MongoClient(mongoUri, { maxPoolSize: 50 })
    .db(process.env.FO_MONGODB_DATABASE)
    .collection<{ _id: string; [field: string]: unknown }>("entities");
  const seconds = (ms: number) => ({
    seconds: BigInt(Math.floor(ms / 1000)),
    nanos: (ms % 1000) * 1e6,
  });
  server.addService(
    { GetEntity: unary(`/${DataStoreService.typeName}/GetEntity`) },
    {
      GetEntity: async (
        call: grpc.ServerUnaryCall<Buffer, Buffer>,
        cb: grpc.sendUnaryData<Buffer>,
      ) => {
        const { kind, id } = fromBinary(GetEntityRequestSchema, call.request);
        const d = await entities.findOne({ _id: `${kind}:${id}` });
        if (d === null) return cb({ code: grpc.status.NOT_FOUND, details: "not found" });
        const entity = {
          kind,
          id,
          document: d.doc as never,
          labels: d.labels as Record<string, string>,
          version: BigInt(d.version as number),
          createTime: seconds(d.createTime as number),
          updateTime: seconds(d.updateTime as number),
        };
        cb(null, encoded(GetEntityResponseSchema, { entity }));
      },
    },
  );
}
const kafkaBrokers = process.env.FO_KAFKA_BROKERS;
if (kafkaBrokers !== undefined) {
  const kafka = new Kafka({ brokers: kafkaBrokers.split(","), logLevel: logLevel.NOTHING });
  const topic = process.env.BARE_KAFKA_TOPIC ?? "bench-bare";
  const platformatic = process.env.BARE_KAFKA_CLIENT === "platformatic";
  /**
   * Consume answered as the mesh's contract asks: every delivery carries its
   * Envelope (the mesh's own mapping of the record and its CloudEvents
   * headers, envelope.ts) under a delivery id of its own, written with the
   * mesh's delivery encoder (wire.ts), and a batch is committed once each
   * of its ids was acknowledged. No dispatcher (ordering per member,
   * redelivery, ack deadlines, retries), no Effect, no telemetry.
   */
  const contract = process.env.BARE_CONSUME_CONTRACT === "1";
  /**
   * kafkajs by default, as the produce pairs' kafkajs side: idempotent, acks from all replicas,
   * key and value only. With `BARE_KAFKA_CLIENT=platformatic`, the fastest Kafka client for Node
   * writing the records the mesh writes: the CloudEvents headers too.
   */
  const produce: (envelopes: ReadonlyArray<Envelope>) => Promise<number> = platformatic
    ? await (async () => {
        const producer = new PlatformaticProducer({
          clientId: "bare-grpcjs",
          bootstrapBrokers: kafkaBrokers.split(","),
          idempotent: true,
          acks: -1,
          serializers: {
            key: stringSerializer,
            headerKey: stringSerializer,
            headerValue: stringSerializer,
          },
        });
        return async (envelopes) => {
          const time = new Date().toISOString();
          const sent = await producer.send({
            messages: envelopes.map((e) => ({
              topic,
              key: e.partitionKey,
              value: Buffer.from(e.payload),
              headers: {
                "content-type": e.contentType,
                ce_id: randomUUID(),
                ce_time: time,
                ce_type: e.messageType,
                ce_source: "floworchestrator-mesh",
                ce_specversion: "1.0",
                ce_partitionkey: e.partitionKey,
                ce_messagekind: "event",
              },
            })),
          });
          return sent.offsets?.[0]?.partition ?? 0;
        };
      })()
    : await (async () => {
        const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
        await producer.connect();
        return async (envelopes) => {
          const stored = await producer.send({
            topic,
            acks: -1,
            messages: envelopes.map((e) => ({
              key: e.partitionKey,
              value: Buffer.from(e.payload),
            })),
          });
          return stored[0]?.partition ?? 0;
        };
      })();
  /** A batch of records as one Consume response: key, value and position per delivery. */
  const deliveriesOf = (
    records: ReadonlyArray<{
      topic: string;
      partition: number;
      offset: bigint;
      key: string;
      value: Buffer | null;
    }>,
  ) =>
    encoded(ConsumeResponseSchema, {
      response: {
        case: "deliveries",
        value: {
          deliveries: records.map((r) => ({
            deliveryId: `${r.partition}:${r.offset}`,
            attempt: 1,
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            message: { partitionKey: r.key, payload: r.value ?? Buffer.alloc(0) },
          })),
        },
      },
    });
  const subscribed = encoded(ConsumeResponseSchema, {
    response: { case: "subscribed", value: {} },
  });
  /**
   * Consume on @platformatic/kafka: its message stream from the earliest offset, up to
   * IN_FLIGHT deliveries not yet settled (the mesh's max_in_flight in the pair); each settle
   * request (one per response, in order) commits that response's last offsets.
   */
  const IN_FLIGHT = 1000;
  const platformaticConsume = (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    let consumer: PlatformaticConsumer<string, Buffer, Buffer, Buffer> | undefined;
    let close = async () => {};
    let inFlight = 0;
    /** Resumes the stream once deliveries were settled (set when subscribed). */
    let pump = () => {};
    const sent: Array<{
      count: number;
      offsets: Map<number, PlatformaticMessage<string, Buffer, Buffer, Buffer>>;
    }> = [];
    let commits = Promise.resolve();
    call.on("data", async (chunk: Buffer) => {
      const { request } = fromBinary(ConsumeRequestSchema, chunk);
      if (request.case === "settle") {
        const settled = sent.shift();
        if (settled === undefined) return;
        inFlight -= settled.count;
        const offsets = [...settled.offsets.values()].map((m) => ({
          topic: m.topic,
          partition: m.partition,
          offset: m.offset + 1n,
          leaderEpoch: m.leaderEpoch,
        }));
        const c = consumer as PlatformaticConsumer<string, Buffer, Buffer, Buffer>;
        commits = commits.then(() => c.commit({ offsets }));
        return pump();
      }
      if (request.case !== "subscribe" || consumer !== undefined) return;
      const c = new PlatformaticConsumer<string, Buffer, Buffer, Buffer>({
        clientId: "bare-grpcjs",
        groupId: request.value.group,
        bootstrapBrokers: kafkaBrokers.split(","),
        deserializers: { key: stringDeserializer },
        maxWaitTime: 100,
      });
      consumer = c;
      const stream = await c
        .consume({
          topics: [makeTopics("fo.").event(request.value.eventTypes[0] ?? "")],
          mode: MessagesStreamModes.EARLIEST,
          autocommit: false,
        })
        .catch((e: unknown) => {
          call.emit("error", { code: grpc.status.INTERNAL, details: String(e) });
          return undefined;
        });
      if (stream === undefined) return;
      stream.on("error", (e) =>
        call.emit("error", { code: grpc.status.INTERNAL, details: String(e) }),
      );
      close = async () => {
        await commits;
        await stream.close();
        await c.close(true);
      };
      call.write(subscribed);
      // Flowing (paused-mode reads measured slower): the messages of one turn leave as one
      // response; the stream pauses while IN_FLIGHT deliveries wait for their settle.
      let batch: Array<PlatformaticMessage<string, Buffer, Buffer, Buffer>> = [];
      const flush = () => {
        const out = batch;
        batch = [];
        if (out.length === 0) return;
        inFlight += out.length;
        sent.push({ count: out.length, offsets: new Map(out.map((m) => [m.partition, m])) });
        call.write(
          deliveriesOf(out.map((m) => ({ ...m, key: m.key ?? "", value: m.value ?? null }))),
        );
      };
      stream.on("data", (m) => {
        if (batch.push(m) === 1) setImmediate(flush);
        if (inFlight + batch.length >= IN_FLIGHT) stream.pause();
      });
      pump = () => {
        if (inFlight + batch.length < IN_FLIGHT && stream.isPaused()) stream.resume();
      };
    });
    call.on("end", async () => {
      await close();
      call.end();
    });
  };
  /**
   * Consume on kafkajs: each batch it fetches goes out as one response, and is committed when
   * the client's next settle request comes in.
   */
  const kafkajsConsume = (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    const settled: Array<() => void> = [];
    /** With the contract: each batch's deliveries not yet acknowledged, by delivery id. */
    const unacked = new Map<string, { left: number; done: () => void }>();
    const idPrefix = `${randomBytes(12).toString("base64url")}.`;
    let sent = 0;
    let consumer: ReturnType<typeof kafka.consumer> | undefined;
    call.on("data", async (chunk: Buffer) => {
      const { request } = fromBinary(ConsumeRequestSchema, chunk);
      if (request.case === "settle" && contract) {
        for (const id of request.value.ackIds) {
          const batch = unacked.get(id);
          if (batch === undefined) continue;
          unacked.delete(id);
          if (--batch.left === 0) batch.done();
        }
        return;
      }
      if (request.case === "settle") return settled.shift()?.();
      if (request.case !== "subscribe" || consumer !== undefined) return;
      const c = kafka.consumer({ groupId: request.value.group, maxWaitTimeInMs: 100 });
      consumer = c;
      await c.connect();
      await c.subscribe({
        topic: makeTopics("fo.").event(request.value.eventTypes[0] ?? ""),
        fromBeginning: true,
      });
      c.on(c.events.GROUP_JOIN, () => call.write(subscribed));
      await c.run({
        autoCommit: false,
        partitionsConsumedConcurrently: 3,
        eachBatch: async ({ batch }) => {
          if (contract) {
            const settle = new Promise<void>((done) => {
              const state = { left: batch.messages.length, done };
              const deliveries = batch.messages.map((m) => {
                const record = fromMessage(batch.topic, batch.partition, m);
                const deliveryId = idPrefix + (sent++).toString(36);
                unacked.set(deliveryId, state);
                return {
                  $typeName: "floworchestrator.messaging.v1.Delivery" as const,
                  deliveryId,
                  attempt: 1,
                  message: fromRecord(record),
                  topic: batch.topic,
                  partition: batch.partition,
                  offset: BigInt(record.offset),
                };
              });
              const bytes = encodeDeliveries(MessageBusService.method.consume, {
                response: { case: "deliveries", value: { deliveries } },
              });
              if (bytes === undefined) throw new Error("deliveries not encodable");
              call.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
            });
            await settle;
          } else {
            const settle = new Promise<void>((resolve) => settled.push(resolve));
            call.write(
              deliveriesOf(
                batch.messages.map((m) => ({
                  topic: batch.topic,
                  partition: batch.partition,
                  offset: BigInt(m.offset),
                  key: m.key?.toString() ?? "",
                  value: m.value,
                })),
              ),
            );
            await settle;
          }
          await c.commitOffsets([
            {
              topic: batch.topic,
              partition: batch.partition,
              offset: String(Number(batch.lastOffset()) + 1),
            },
          ]);
        },
      });
    });
    call.on("end", async () => {
      await consumer?.disconnect();
      call.end();
    });
  };
  // Neither client reports where each record went, only each partition's first offset.
  const send = async (envelopes: ReadonlyArray<Envelope>) => {
    const partition = await produce(envelopes);
    return envelopes.map((e) => ({ messageId: e.messageId, topic, partition }));
  };
  server.addService(
    {
      PublishEvent: unary(`/${MessageBusService.typeName}/PublishEvent`),
      PublishBatch: unary(`/${MessageBusService.typeName}/PublishBatch`),
      Consume: {
        ...unary(`/${MessageBusService.typeName}/Consume`),
        requestStream: true,
        responseStream: true,
      },
    },
    {
      PublishEvent: async (
        call: grpc.ServerUnaryCall<Buffer, Buffer>,
        cb: grpc.sendUnaryData<Buffer>,
      ) => {
        const { event } = fromBinary(PublishEventRequestSchema, call.request);
        const [receipt] = await send(event === undefined ? [] : [event]);
        cb(null, encoded(PublishEventResponseSchema, { receipt }));
      },
      PublishBatch: async (
        call: grpc.ServerUnaryCall<Buffer, Buffer>,
        cb: grpc.sendUnaryData<Buffer>,
      ) => {
        const { messages } = fromBinary(PublishBatchRequestSchema, call.request);
        cb(null, encoded(PublishBatchResponseSchema, { receipts: await send(messages) }));
      },
      // The first request subscribes (group, first event type).
      Consume: platformatic ? platformaticConsume : kafkajsConsume,
    },
  );
}
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
    e ? reject(e) : resolve(p),
  ),
);
console.log(`listening on http://127.0.0.1:${port}`);
process.on("SIGTERM", () => {
  server.forceShutdown();
  setTimeout(() => process.exit(0), 500).unref();
});
