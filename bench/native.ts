/**
 * Native gRPC: the mesh's grpc-js port (FO_GRPC_PORT) vs a bare grpc-js
 * server (bench/bare-grpcjs.ts) answering the same RPC with nothing else, as
 * a native gRPC client sees them. Health/Check; MemoryManager Read of 1 KiB
 * on the embedded store (the bare server answers a fixed 1 KiB entry); and
 * Read on Hazelcast (the bare server's handler is one `IMap.get` on the same
 * member; a floor beside it runs that get in an Effect fiber per call).
 * h2load loads each side from the second core while the server has the
 * first (grpcSide), so throughput is per core.
 */
import { randomUUID } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Client } from "hazelcast-client";
import { MemoryManagerService } from "../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { comparePair, type PairGroup, type Row } from "./harness.js";
import { nativePort, type Server, startBareGrpcJs, startMesh } from "./servers.js";
import { grpcCall, grpcSide } from "./tools.js";

const KIB = Buffer.alloc(1024, 7);
const NATIVE = { minRatio: 0.6 };
const NATIVE_HAZELCAST = { minRatio: 0.7 };
const BARE_MAP = "bench-bare-entries";

/** An address allocated and written with 1 KiB on the mesh, and the Read call of it. */
const seedRead = async (mesh: Server) => {
  const address = `${randomUUID()}:FLOW:PROCESS:main:0:Data`;
  const memory = createClient(
    MemoryManagerService,
    createGrpcTransport({ baseUrl: nativePort(mesh).url }),
  );
  const ref = { kind: { case: "text" as const, value: address } };
  await memory.allocate({
    address: ref,
    owner: "bench",
    ttl: { seconds: 3600n },
    maxIdle: { seconds: 3600n },
  });
  await memory.write({ address: ref, owner: "bench", data: KIB });
  return { address, call: grpcCall(MemoryManagerService, "read", { address: ref }) };
};

export const native: PairGroup = {
  id: "native",
  title: "Native gRPC (grpc-js port)",
  infra: true,
  run: async ({ infra, profileDir }) => {
    if (infra === undefined) throw new Error("needs the real backends");
    const rows: Row[] = [];
    const [mesh, bare] = await Promise.all([startMesh({}, profileDir), startBareGrpcJs()]);
    try {
      const check = grpcCall(Health, "check", {});
      rows.push({
        name: "Native gRPC: Health/Check",
        result: await comparePair(
          "Native gRPC: Health/Check",
          await grpcSide({ label: "mesh, native port", server: nativePort(mesh), call: check }),
          await grpcSide({ label: "bare grpc-js", server: bare, call: check }),
          "b",
        ),
        target: NATIVE,
      });
      const { call } = await seedRead(mesh);
      rows.push({
        name: "Native gRPC: Memory Read 1 KiB (embedded)",
        result: await comparePair(
          "Native gRPC: Memory Read 1 KiB (embedded)",
          await grpcSide({ label: "mesh, native port", server: nativePort(mesh), call }),
          await grpcSide({ label: "bare grpc-js, fixed 1 KiB", server: bare, call }),
          "b",
        ),
        target: NATIVE,
        note: "The bare server answers every Read with the same 1 KiB entry, built per call as the mesh's is; the mesh checks the address, the caller and the branch, and reads its embedded store.",
      });
    } finally {
      await Promise.all([mesh.stop(), bare.stop()]);
    }

    const hazelcast = {
      FO_HAZELCAST_MEMBERS: infra.hazelcastMembers.join(","),
      FO_HAZELCAST_CLUSTER: "dev",
    };
    const [hzMesh, hzBare, hzFiber] = await Promise.all([
      startMesh(hazelcast, profileDir),
      startBareGrpcJs({ ...hazelcast, BARE_HAZELCAST_MAP: BARE_MAP }),
      startBareGrpcJs({ ...hazelcast, BARE_HAZELCAST_MAP: BARE_MAP, BARE_EFFECT: "1" }),
    ]);
    const driver = await Client.newHazelcastClient({
      clusterName: "dev",
      network: { clusterMembers: [...infra.hazelcastMembers] },
      properties: { "hazelcast.logging.level": "OFF" },
    });
    try {
      const { address, call } = await seedRead(hzMesh);
      const map = await driver.getMap<string, Buffer>(BARE_MAP);
      await map.set(address, KIB);
      rows.push({
        name: "Native gRPC: Memory Read 1 KiB on Hazelcast",
        result: await comparePair(
          "Native gRPC: Memory Read 1 KiB on Hazelcast",
          await grpcSide({ label: "mesh, native port", server: nativePort(hzMesh), call }),
          await grpcSide({ label: "bare grpc-js + IMap.get", server: hzBare, call }),
          "b",
        ),
        target: NATIVE_HAZELCAST,
        note: "Both read the same member; the bare handler is one IMap.get of a 1 KiB value. CPU is the server process's only (the member's is shared).",
      });
      rows.push({
        name: "Floor: Read on Hazelcast via bare grpc-js, one Effect fiber per call",
        result: await comparePair(
          "Floor: Read on Hazelcast via bare grpc-js, one Effect fiber per call",
          await grpcSide({ label: "bare grpc-js + IMap.get in a fiber", server: hzFiber, call }),
          await grpcSide({ label: "bare grpc-js + IMap.get", server: hzBare, call }),
          "b",
        ),
        note: "Context, no target: the least an Effect handler costs (the issue asks for the same Effect handlers on every path). bench/bare-grpcjs.ts with BARE_EFFECT=1 runs the same IMap.get as an Effect.async in a fiber forked per call (Runtime.runFork, answered from its observer); nothing else differs.",
      });
      await map.destroy();
    } finally {
      await driver.shutdown();
      await Promise.all([hzMesh.stop(), hzBare.stop(), hzFiber.stop()]);
    }
    return rows;
  },
};
