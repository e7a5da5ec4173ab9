/**
 * For orientation (no target): the same mesh calls on the real backends vs
 * the embedded ones `npm start` uses by default, DataStore GetEntity and
 * MemoryManager Read of 1 KiB, with h2load / ghz. Shows what a round trip to
 * FerretDB or Hazelcast costs on top of the mesh's own path.
 */
import { randomUUID } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { MongoClient } from "mongodb";
import { DataStoreService } from "../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { MemoryManagerService } from "../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { comparePair, type PairGroup } from "./harness.js";
import { type Server, startMesh } from "./servers.js";
import { grpcCall, grpcSide } from "./tools.js";

export const backends: PairGroup = {
  id: "backends",
  title: "Real vs embedded backends",
  infra: true,
  run: async ({ infra, profileDir }) => {
    if (infra === undefined) throw new Error("needs the real backends");
    const database = `bench_${randomUUID().slice(0, 8)}`;
    const [real, embedded] = await Promise.all([
      startMesh(
        {
          FO_MONGODB_URI: infra.mongodbUri,
          FO_MONGODB_DATABASE: database,
          FO_HAZELCAST_MEMBERS: infra.hazelcastMembers.join(","),
        },
        profileDir,
      ),
      startMesh(),
    ]);
    try {
      const address = {
        kind: {
          case: "text" as const,
          value: `BENCH-${randomUUID().slice(0, 8)}:FLOW:PROCESS:main:1:Data`,
        },
      };
      const seed = async (server: Server) => {
        const transport = createGrpcTransport({ baseUrl: server.url });
        await createClient(DataStoreService, transport).createEntity({
          kind: "bench",
          id: "doc-1",
          document: { payload: "x".repeat(1000), n: 1 },
        });
        const memory = createClient(MemoryManagerService, transport);
        await memory.allocate({
          address,
          owner: "bench",
          ttl: { seconds: 3600n },
          maxIdle: { seconds: 3600n },
        });
        await memory.write({ address, owner: "bench", data: new Uint8Array(1024).fill(120) });
      };
      await Promise.all([seed(real), seed(embedded)]);
      const get = grpcCall(DataStoreService, "getEntity", { kind: "bench", id: "doc-1" });
      const read = grpcCall(MemoryManagerService, "read", { address });
      const getEntity = await comparePair(
        "Backends: GetEntity 1 KiB, FerretDB vs embedded",
        await grpcSide({ label: "mesh on FerretDB", server: real, call: get }),
        await grpcSide({ label: "mesh, embedded store", server: embedded, call: get }),
      );
      const memoryRead = await comparePair(
        "Backends: Read 1 KiB, Hazelcast vs embedded",
        await grpcSide({ label: "mesh on Hazelcast", server: real, call: read }),
        await grpcSide({ label: "mesh, embedded store", server: embedded, call: read }),
      );
      const note =
        "Context, no target. The backend servers' own CPU is not counted (they are shared, long-running processes).";
      return [
        { name: "Backends: GetEntity 1 KiB, FerretDB vs embedded", result: getEntity, note },
        { name: "Backends: Read 1 KiB, Hazelcast vs embedded", result: memoryRead, note },
      ];
    } finally {
      await Promise.all([real.stop(), embedded.stop()]);
      const mongo = new MongoClient(infra.mongodbUri, { serverSelectionTimeoutMS: 2000 });
      await mongo
        .db(database)
        .dropDatabase()
        .catch(() => {});
      await mongo.close();
    }
  },
};
