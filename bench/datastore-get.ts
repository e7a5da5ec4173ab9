/**
 * DataStore GetEntity through the mesh vs the same findOne issued directly
 * with the driver: same FerretDB, same pool size, same concurrency.
 *
 *   npm run bench:datastore            # 5 rounds of 5 s per side
 *   npm run bench:datastore -- --quick # a smoke run of a few seconds
 */
import { randomUUID } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { MongoClient } from "mongodb";
import { DataStoreService } from "../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { up } from "../test/infra/index.js";
import { spawnMesh } from "../test/support/process.js";
import { comparePair, report } from "./harness.js";

const POOL = 50; // the mesh adapter's maxPoolSize

const infra = await up({ log: (l) => console.error(l) });
const database = `bench_${randomUUID().slice(0, 8)}`;
const mesh = await spawnMesh({ FO_MONGODB_URI: infra.mongodbUri, FO_MONGODB_DATABASE: database });
try {
  const client = createClient(
    DataStoreService,
    createConnectTransport({ baseUrl: mesh.url, httpVersion: "2" }),
  );
  await client.createEntity({
    kind: "bench",
    id: "doc-1",
    document: { payload: "x".repeat(1000), n: 1 },
  });
  const direct = new MongoClient(infra.mongodbUri, {
    maxPoolSize: POOL,
    serverSelectionTimeoutMS: 2000,
  });
  const entities = direct.db(database).collection<{ _id: string }>("entities");
  const [mesh1, direct1] = await comparePair(
    () => client.getEntity({ kind: "bench", id: "doc-1" }),
    async () => {
      if ((await entities.findOne({ _id: "bench:doc-1" })) === null)
        throw new Error("seed document missing");
    },
  );
  await direct.close();
  report("datastore-get", "GetEntity (1 KiB) via mesh vs direct findOne on FerretDB", [
    {
      name: "GetEntity",
      meshLabel: "mesh GetEntity (Connect, HTTP/2)",
      directLabel: "direct findOne",
      mesh: mesh1,
      direct: direct1,
    },
  ]);
} finally {
  mesh.child.kill("SIGTERM");
  await mesh.exited;
}
process.exit(0);
