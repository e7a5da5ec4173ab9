/**
 * The hop of a split deployment: node A hosts DataStore (so the service
 * registry) and registers; node B hosts MemoryManager, MessageBus and
 * Telemetry and finds the registry through A (the set-up of
 * test/e2e/mesh-split.test.ts, as processes). MemoryManager Read of 1 KiB
 * called on A, which forwards it to B over @grpc/grpc-js, vs called on B
 * directly. B's memory is the embedded store: what differs is the hop alone.
 * h2load / ghz.
 *
 * And the floor of any hop: the same Read through bench/relay.ts, a bare
 * node:http2 relay, vs called on B directly. What a Node process in the path
 * costs before it does any work of its own.
 */
import { randomUUID } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { MemoryManagerService } from "../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { comparePair, type PairGroup } from "./harness.js";
import { startMesh, startRelay } from "./servers.js";
import { grpcCall, grpcSide } from "./tools.js";

export const forward: PairGroup = {
  id: "forward",
  title: "Forwarded call",
  infra: false,
  run: async ({ profileDir }) => {
    const a = await startMesh({ FO_SERVICES: "datastore", FO_MESH_REGISTER: "true" }, profileDir);
    const b = await startMesh({ FO_SERVICES: "memory,messaging,telemetry", FO_MESH_SEEDS: a.url });
    const relay = await startRelay(b.url);
    try {
      const address = {
        kind: {
          case: "text" as const,
          value: `BENCH-${randomUUID().slice(0, 8)}:FLOW:PROCESS:main:1:Data`,
        },
      };
      const onB = createClient(MemoryManagerService, createGrpcTransport({ baseUrl: b.url }));
      await onB.allocate({
        address,
        owner: "bench",
        ttl: { seconds: 3600n },
        maxIdle: { seconds: 3600n },
      });
      await onB.write({ address, owner: "bench", data: new Uint8Array(1024).fill(120) });
      // A routes to B once B is READY in A's registry and A's registry watch has seen it.
      const onA = createClient(MemoryManagerService, createGrpcTransport({ baseUrl: a.url }));
      for (let i = 0; ; i++) {
        const ok = await onA.read({ address }, { timeoutMs: 1000 }).then(
          (r) => r.data.length === 1024,
          () => false,
        );
        if (ok) break;
        if (i === 300) throw new Error("node A never forwarded MemoryManager calls to node B");
        await new Promise((r) => setTimeout(r, 100));
      }
      const call = grpcCall(MemoryManagerService, "read", { address });
      const result = await comparePair(
        "Forwarded call: Read 1 KiB via node A → B",
        await grpcSide({ label: "client → A → B", server: a, call, pids: [a.pid, b.pid] }),
        await grpcSide({ label: "client → B", server: b, call }),
      );
      const floor = await comparePair(
        "Floor: Read 1 KiB via a bare node:http2 relay → B",
        await grpcSide({
          label: "client → relay → B",
          server: relay,
          call,
          pids: [relay.pid, b.pid],
        }),
        await grpcSide({ label: "client → B", server: b, call }),
      );
      return [
        {
          name: "Forwarded call: Read 1 KiB via node A → B",
          result,
          target: { maxAddedP50: 0.3 },
          note: "A is charged with the CPU and peak RSS of both nodes (the forwarded call runs on both); B with B's alone. B uses the embedded memory store, so only the hop differs.",
        },
        {
          name: "Floor: Read 1 KiB via a bare node:http2 relay → B",
          result: floor,
          note: "Context, no target: the least a forwarding hop in Node costs. bench/relay.ts passes each call on as it came (headers, body, trailers) without decoding it, and does nothing else. The relay side is charged with the CPU and peak RSS of the relay and B; B with B's alone.",
        },
      ];
    } finally {
      await relay.stop();
      await b.stop();
      await a.stop();
    }
  },
};
