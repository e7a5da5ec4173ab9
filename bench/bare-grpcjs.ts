/**
 * The baseline of the native gRPC pairs: a bare `@grpc/grpc-js` server, no
 * policy, no telemetry, no Effect, protobuf-es for the messages (as the mesh
 * uses). It answers grpc.health.v1.Health/Check, and MemoryManager Read: with
 * `FO_HAZELCAST_MEMBERS` set, by one `IMap.get` of the address on the mesh's
 * entries map (what the mesh's Read must at least do); otherwise with a fixed
 * entry of `BARE_READ_BYTES` bytes (what the embedded store answers from
 * memory). Run as its own process. Prints one line: "listening on <url>".
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { Client } from "hazelcast-client";
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
} from "../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import {
  Health,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../gen/grpc/health/v1/health_pb.js";

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

const fixed = Buffer.alloc(Number(process.env.BARE_READ_BYTES ?? 1024), 7);
const serving = Buffer.from(
  toBinary(
    HealthCheckResponseSchema,
    create(HealthCheckResponseSchema, { status: HealthCheckResponse_ServingStatus.SERVING }),
  ),
);
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

const server = new grpc.Server();
server.addService(
  { Check: unary(`/${Health.typeName}/Check`) },
  { Check: (_call: unknown, callback: grpc.sendUnaryData<Buffer>) => callback(null, serving) },
);
server.addService(
  { Read: unary(`/${MemoryManagerService.typeName}/Read`) },
  {
    Read: async (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const ref = fromBinary(ReadRequestSchema, call.request).address?.kind;
      const address = ref?.case === "text" ? ref.value : "";
      const stored = map === undefined ? fixed : await map.get(address);
      const data = stored instanceof Buffer ? stored : Buffer.alloc(0);
      const entry = { address, version: 1n, sizeBytes: BigInt(data.length) };
      cb(
        null,
        Buffer.from(toBinary(ReadResponseSchema, create(ReadResponseSchema, { data, entry }))),
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
        cb(
          null,
          Buffer.from(
            toBinary(GetEntityResponseSchema, create(GetEntityResponseSchema, { entity })),
          ),
        );
      },
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
