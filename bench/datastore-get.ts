/**
 * DataStore GetEntity of a 1 KiB document through the mesh (MongoDB adapter)
 * vs the same findOne issued directly with the driver, on the same FerretDB
 * with the same pool size. Both sides are loaded from the bench process: the
 * baseline is a driver call no external tool can make. The floor beside it:
 * a bare grpc-js server (bench/bare-grpcjs.ts) in the mesh's place.
 */
import { randomUUID } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { MongoClient } from "mongodb";
import { DataStoreService } from "../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { status } from "../test/infra/index.js";
import { comparePair, type PairGroup } from "./harness.js";
import { nativePort, startBareGrpcJs, startMesh } from "./servers.js";
import { grpcJsTransport, NODE_CLIENT, nodeSide } from "./tools.js";

/** The mesh adapter's maxPoolSize (src/datastore/mongodb.ts). */
const POOL = 50;

export const datastore: PairGroup = {
  id: "datastore",
  title: "DataStore",
  infra: true,
  run: async ({ infra, profileDir }) => {
    if (infra === undefined) throw new Error("needs the real backends");
    const database = `bench_${randomUUID().slice(0, 8)}`;
    const mesh = await startMesh(
      { FO_MONGODB_URI: infra.mongodbUri, FO_MONGODB_DATABASE: database },
      profileDir,
    );
    // The floor: a bare grpc-js server whose GetEntity handler is one findOne (bench/bare-grpcjs.ts).
    const bare = await startBareGrpcJs({
      FO_MONGODB_URI: infra.mongodbUri,
      FO_MONGODB_DATABASE: database,
    });
    const direct = new MongoClient(infra.mongodbUri, {
      maxPoolSize: POOL,
      serverSelectionTimeoutMS: 2000,
    });
    try {
      // Native gRPC clients call the grpc-js port: the fast path.
      const client = createClient(DataStoreService, grpcJsTransport(nativePort(mesh).url));
      await client.createEntity({
        kind: "bench",
        id: "doc-1",
        document: { payload: "x".repeat(1000), n: 1 },
      });
      // The adapter's own layout: collection "entities", _id "<kind>:<id>".
      const entities = direct.db(database).collection<{ _id: string }>("entities");
      // Both sides are charged with all the CPU their calls take: FerretDB's, and the bench
      // process's (the driver's on one side, the gRPC client's on the other).
      const ferretdb = (await status()).find((b) => b.name === "ferretdb")?.pid;
      const cpuAlso = [...(ferretdb === undefined ? [] : [ferretdb]), process.pid];
      const findOne = nodeSide({
        label: "direct findOne",
        tool: "Node: mongodb driver",
        cpuAlso,
        call: async () => {
          if ((await entities.findOne({ _id: "bench:doc-1" })) === null)
            throw new Error("seed document missing");
        },
      });
      const result = await comparePair(
        "DataStore: GetEntity 1 KiB",
        nodeSide({
          label: "mesh GetEntity",
          tool: NODE_CLIENT,
          pids: [mesh.pid],
          cpuAlso,
          call: () => client.getEntity({ kind: "bench", id: "doc-1" }),
        }),
        findOne,
      );
      const bareClient = createClient(DataStoreService, grpcJsTransport(bare.url));
      const floor = await comparePair(
        "Floor: GetEntity via a bare grpc-js server",
        nodeSide({
          label: "bare grpc-js GetEntity",
          tool: NODE_CLIENT,
          pids: [bare.pid],
          cpuAlso,
          call: () => bareClient.getEntity({ kind: "bench", id: "doc-1" }),
        }),
        findOne,
      );
      return [
        {
          name: "DataStore: GetEntity 1 KiB",
          result,
          target: { maxAddedP50: 0.15, minRatio: 0.5 },
          note: "CPU counts every process each call runs in: FerretDB and the bench process on both sides (it makes the driver call on one, the gRPC call on the other), and the mesh; peak RSS is the mesh's.",
        },
        {
          name: "Floor: GetEntity via a bare grpc-js server",
          result: floor,
          note: "Context, no target: the least a gRPC hop in front of the driver costs here. bench/bare-grpcjs.ts answers GetEntity with one findOne and the entity built from the stored fields: no checks, no Effect, no telemetry. Called and charged as the mesh side above.",
        },
      ];
    } finally {
      await bare.stop();
      await mesh.stop();
      await direct
        .db(database)
        .dropDatabase()
        .catch(() => {});
      await direct.close();
    }
  },
};
