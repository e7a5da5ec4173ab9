/**
 * Two mesh processes sharing one Hazelcast cluster: WatchMemory on one sees
 * allocations, writes, releases and expiries made through the other, and
 * memory written through one is read through the other.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import {
  WatchMemoryResponse_Type as EventType,
  MemoryManagerService,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { clientFor } from "../support/clients.js";
import { type MeshProcess, spawnMesh } from "../support/process.js";

let a: MeshProcess;
let b: MeshProcess;
beforeAll(async () => {
  const env = {
    FO_HAZELCAST_MEMBERS: inject("infra").hazelcastMembers.join(","),
    FO_HAZELCAST_CLUSTER: "dev",
  };
  [a, b] = await Promise.all([spawnMesh(env), spawnMesh(env)]);
});
afterAll(async () => {
  for (const p of [a, b]) p?.child.kill("SIGTERM");
  await Promise.all([a?.exited, b?.exited]);
});

const memory = (p: MeshProcess) => clientFor(MemoryManagerService, "gRPC (h2c)", p.url);

describe("memory across mesh instances", () => {
  it("WatchMemory on A sees what B does, and A reads what B wrote", async () => {
    const exec = `EXEC-${randomUUID().slice(0, 8)}`;
    const address = { kind: { case: "text" as const, value: `${exec}:FLOW-1:IMPORT:main:1:Rows` } };
    const expiring = {
      kind: { case: "text" as const, value: `${exec}:FLOW-1:IMPORT:main:1:Temp` },
    };
    const seen: EventType[] = [];
    for await (const e of memory(a).watchMemory({ executionId: exec }, { timeoutMs: 20_000 })) {
      seen.push(e.type);
      if (e.type === EventType.STARTED) await memory(b).allocate({ address, owner: "importer" });
      if (e.type === EventType.ALLOCATED && e.address.endsWith("Rows")) {
        await memory(b).write({ address, owner: "importer", data: new TextEncoder().encode("42") });
      }
      if (e.type === EventType.WRITTEN) {
        expect(new TextDecoder().decode((await memory(a).read({ address })).data)).toBe("42");
        await memory(b).allocate({
          address: expiring,
          owner: "importer",
          ttl: { seconds: 1n },
          maxIdle: { seconds: 1n },
        });
      }
      if (e.type === EventType.EXPIRED) break;
    }
    expect(seen).toEqual([
      EventType.STARTED,
      EventType.ALLOCATED,
      EventType.WRITTEN,
      EventType.ALLOCATED,
      EventType.EXPIRED,
    ]);
  });
});
