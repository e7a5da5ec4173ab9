/**
 * MemoryManager with its Hazelcast cluster unreachable: calls fail fast with
 * UNAVAILABLE (no hang, no crash, no backend address in the message), health
 * says NOT_SERVING, and the rest of the mesh keeps serving.
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.js";
import { defaultConfig } from "../../src/config.js";
import { clientFor, failureOf } from "../support/clients.js";
import { startMesh } from "../support/mesh.js";

describe("MemoryManager backend", () => {
  it("Hazelcast unreachable: UNAVAILABLE quickly, health NOT_SERVING, the server keeps serving", async () => {
    const defaults = defaultConfig();
    const mesh = await startMesh({
      memory: { ...defaults.memory, hazelcastMembers: ["127.0.0.1:1"] },
    });
    try {
      const memory = clientFor(MemoryManagerService, "gRPC (h2c)", mesh.url);
      const address = { kind: { case: "text" as const, value: "E:F:IMPORT:main:1:Rows" } };
      const err = await failureOf(memory.allocate({ address, owner: "o" }, { timeoutMs: 15_000 }));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.message).not.toContain("127.0.0.1:1");
      const health = clientFor(Health, "gRPC (h2c)", mesh.url);
      expect((await health.check({ service: MemoryManagerService.typeName })).status).toBe(
        Status.NOT_SERVING,
      );
      expect(
        (await health.check({ service: "floworchestrator.datastore.v1.DataStoreService" })).status,
      ).toBe(Status.SERVING);
    } finally {
      await mesh.close();
    }
  }, 30_000);
});
