/**
 * MemoryManager Read and Write of 1 KiB through the mesh vs direct
 * hazelcast-client `get` / `set` on the same member, same concurrency.
 *
 *   npm run bench:memory            # 5 rounds of 5 s per side and pair
 *   npm run bench:memory -- --quick # a smoke run
 */
import { randomUUID } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Client } from "hazelcast-client";
import { MemoryManagerService } from "../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { up } from "../test/infra/index.js";
import { spawnMesh } from "../test/support/process.js";
import { comparePair, report } from "./harness.js";

/** Spread over many addresses so concurrent writers rarely race for one version. */
const SLOTS = 64;

const infra = await up({ log: (l) => console.error(l) });
const mesh = await spawnMesh({
  FO_HAZELCAST_MEMBERS: infra.hazelcastMembers.join(","),
  FO_HAZELCAST_CLUSTER: "dev",
});
const hz = await Client.newHazelcastClient({
  clusterName: "dev",
  network: { clusterMembers: [...infra.hazelcastMembers] },
  properties: { "hazelcast.client.statistics.enabled": false },
});
try {
  const exec = `BENCH-${randomUUID().slice(0, 8)}`;
  const memory = createClient(
    MemoryManagerService,
    createConnectTransport({ baseUrl: mesh.url, httpVersion: "2" }),
  );
  const data = new Uint8Array(1024).fill(120);
  const address = (i: number) => ({
    kind: { case: "text" as const, value: `${exec}:FLOW:PROCESS:main:${i}:Data` },
  });
  const map = await hz.getMap<string, Buffer>(`bench-direct-${exec}`);
  for (let i = 0; i < SLOTS; i++) {
    await memory.allocate({
      address: address(i),
      owner: "bench",
      ttl: { seconds: 3600n },
      maxIdle: { seconds: 3600n },
    });
    await memory.write({ address: address(i), owner: "bench", data });
    await map.set(`k${i}`, Buffer.from(data));
  }
  let n = 0;
  const next = () => n++ % SLOTS;
  const [readMesh, readDirect] = await comparePair(
    () => memory.read({ address: address(next()) }),
    () => map.get(`k${next()}`),
  );
  const [writeMesh, writeDirect] = await comparePair(
    () => memory.write({ address: address(next()), owner: "bench", data }),
    () => map.set(`k${next()}`, Buffer.from(data)),
  );
  report("memory-rw", "MemoryManager Read/Write (1 KiB) via mesh vs direct hazelcast-client", [
    {
      name: "Read",
      meshLabel: "mesh Read (Connect, HTTP/2)",
      directLabel: "direct IMap.get",
      mesh: readMesh,
      direct: readDirect,
    },
    {
      name: "Write",
      meshLabel: "mesh Write (Connect, HTTP/2)",
      directLabel: "direct IMap.set",
      mesh: writeMesh,
      direct: writeDirect,
    },
  ]);
  await map.destroy();
} finally {
  await hz.shutdown();
  mesh.child.kill("SIGTERM");
  await mesh.exited;
}
process.exit(0);
