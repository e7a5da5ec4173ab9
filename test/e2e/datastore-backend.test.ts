/**
 * The DataStore's backend as operators meet it: an unreachable MongoDB makes
 * calls fail fast with UNAVAILABLE and health NOT_SERVING (no hang, no crash);
 * the embedded store keeps every write across a restart of the process.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { Option, Redacted } from "effect";
import { describe, expect, it } from "vitest";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.js";
import { defaultConfig } from "../../src/config.js";
import { clientFor, failureOf } from "../support/clients.js";
import { startMesh } from "../support/mesh.js";
import { spawnMesh } from "../support/process.js";

describe("DataStore backend", () => {
  it("MongoDB unreachable: UNAVAILABLE quickly, health NOT_SERVING, the server keeps serving", async () => {
    const defaults = defaultConfig();
    const mesh = await startMesh({
      datastore: {
        ...defaults.datastore,
        mongodbUri: Option.some(Redacted.make("mongodb://127.0.0.1:1/")),
      },
    });
    try {
      const ds = clientFor(DataStoreService, "gRPC (h2c)", mesh.url);
      const err = await failureOf(ds.getEntity({ kind: "flow", id: "x" }, { timeoutMs: 15_000 }));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.message).not.toContain("127.0.0.1:1");
      const health = clientFor(Health, "gRPC (h2c)", mesh.url);
      expect((await health.check({ service: DataStoreService.typeName })).status).toBe(
        Status.NOT_SERVING,
      );
      expect((await health.check({ service: "grpc.health.v1.Health" })).status).toBe(
        Status.SERVING,
      );
    } finally {
      await mesh.close();
    }
  });

  it("embedded: a restarted process keeps entities, registrations, parameters and versions", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fo-restart-"));
    const first = await spawnMesh({ FO_DATA_DIR: dir });
    const ds1 = clientFor(DataStoreService, "gRPC (h2c)", first.url);
    await ds1.createEntity({ kind: "flow", id: "kept", document: { n: 1 } });
    await ds1.registerService({
      service: { serviceId: "svc", version: "1.0.0", serviceType: "importer" },
    });
    await ds1.setParameter({
      key: "k",
      scope: 1,
      value: { kind: { case: "boolValue", value: true } },
    });
    await ds1.createVersion({
      version: { entityType: "flow", entityId: "kept", version: "1.0.0" },
    });
    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);

    const second = await spawnMesh({ FO_DATA_DIR: dir });
    try {
      const ds2 = clientFor(DataStoreService, "gRPC (h2c)", second.url);
      expect((await ds2.getEntity({ kind: "flow", id: "kept" })).entity?.document).toEqual({
        n: 1,
      });
      expect((await ds2.getService({ serviceId: "svc" })).service?.version).toBe("1.0.0");
      expect((await ds2.getParameter({ key: "k", scope: 1 })).parameter?.revision).toBe(1n);
      expect(
        (await ds2.getLatestVersion({ entityType: "flow", entityId: "kept" })).version?.version,
      ).toBe("1.0.0");
    } finally {
      second.child.kill("SIGTERM");
      await second.exited;
    }
  });
});
