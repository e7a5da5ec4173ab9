/**
 * The backend gauges on the real backends from test/infra:
 * `datastore.pool.connections` from the MongoDB driver's pool on FerretDB,
 * and `memory.map.entries` from `IMap.size()` on Hazelcast. A mesh on both
 * backends shows them on `/metrics` with plausible values; on maps of their
 * own (a random prefix, so tests sharing the cluster do not interfere), the
 * entries grow by exactly N after N allocations and go back after the
 * execution's cleanup.
 */
import { randomBytes } from "node:crypto";
import { Effect, Layer, ManagedRuntime, Option, Redacted } from "effect";
import { Client } from "hazelcast-client";
import { MongoClient } from "mongodb";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { defaultConfig, MeshConfig } from "../../src/config.js";
import { INLINE_MAX_BYTES } from "../../src/memory/hazelcast/stored.js";
import { HazelcastMemoryStore } from "../../src/memory/hazelcast.js";
import { MemoryManager } from "../../src/memory/MemoryManager.js";
import { Telemetry, telemetryLayer } from "../../src/telemetry/pipeline.js";
import { HAZELCAST_CLUSTER, hazelcastClientConfig } from "../infra/hazelcast.js";
import { clientFor } from "../support/clients.js";
import { memoryManagerLayer } from "../support/memory.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { portCaller } from "../support/port.js";

const infra = inject("infra");
const suffix = randomBytes(5).toString("hex");
const database = `metrics_${suffix}`;
const mapPrefix = `metrics_${suffix}_`;

/** Polls until `probe` yields a value, or fails after `ms`. */
const poll = async <A>(what: string, probe: () => Promise<A | undefined>, ms = 15_000) => {
  const until = Date.now() + ms;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
};

/** A gauge's samples on /metrics: label value of `by` → value. */
const gauge = (exposition: string, name: string, by: string): Record<string, number> => {
  const samples: Record<string, number> = {};
  for (const line of exposition.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const label = new RegExp(`${by}="([^"]*)"`).exec(line)?.[1];
    if (label !== undefined) samples[label] = Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return samples;
};

/** Bytes above the record's inline limit (src/memory/hazelcast/stored.ts): stored in `data`. */
const LARGE = new Uint8Array(INLINE_MAX_BYTES + 1);

const exec = (tag: string) => `EXEC-${tag}-${randomBytes(4).toString("hex")}`;
const address = (executionId: string, i: number) => ({
  kind: { case: "text" as const, value: `${executionId}:FLOW-1:IMPORT:main:${i}:Rows` },
});

let mesh: TestMesh;
beforeAll(async () => {
  const defaults = defaultConfig();
  mesh = await startMesh({
    datastore: {
      ...defaults.datastore,
      mongodbUri: Option.some(Redacted.make(infra.mongodbUri)),
      mongodbDatabase: database,
    },
    memory: {
      ...defaults.memory,
      hazelcastMembers: infra.hazelcastMembers,
      hazelcastCluster: HAZELCAST_CLUSTER,
    },
  });
});
afterAll(async () => {
  await mesh?.close();
  const mongo = new MongoClient(infra.mongodbUri, { serverSelectionTimeoutMS: 10_000 });
  try {
    await mongo.db(database).dropDatabase();
  } finally {
    await mongo.close();
  }
});

const metrics = async () => (await fetch(`${mesh.url}/metrics`)).text();

describe("datastore.pool.connections on FerretDB", () => {
  it("shows the pool's connections in use and idle, and calls using them", async () => {
    const datastore = clientFor(DataStoreService, "gRPC (h2c)", mesh.url);
    await datastore.createEntity({ kind: "flow", document: { name: "pooled" } });
    const after = gauge(await metrics(), "datastore_pool_connections", "state");
    expect(Object.keys(after).sort()).toEqual(["idle", "in_use"]);
    const inUse = after.in_use ?? -1;
    const size = inUse + (after.idle ?? -1);
    expect(inUse).toBeGreaterThanOrEqual(0);
    expect(size).toBeGreaterThanOrEqual(1);
    // The driver's maxPoolSize (one server).
    expect(size).toBeLessThanOrEqual(50);

    // While a burst of calls runs, scrapes see connections checked out.
    const busiest = await poll("a scrape with a connection in use", async () => {
      let most = 0;
      const burst = Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          datastore.createEntity({ kind: "flow", document: { name: `burst ${i}` } }),
        ),
      );
      let done = false;
      void burst.then(() => {
        done = true;
      });
      while (!done) {
        most = Math.max(
          most,
          gauge(await metrics(), "datastore_pool_connections", "state").in_use ?? 0,
        );
      }
      await burst;
      return most > 0 ? most : undefined;
    });
    expect(busiest).toBeGreaterThanOrEqual(1);
  });
});

describe("memory.map.entries on Hazelcast", () => {
  it("shows the entries of the four maps of the mesh's store", async () => {
    const memory = clientFor(MemoryManagerService, "gRPC (h2c)", mesh.url);
    const executionId = exec("gauge");
    const n = 12;
    for (let i = 0; i < n; i++) {
      await memory.allocate({ address: address(executionId, i), owner: "metrics-test" });
      // Bytes above the inline limit have an entry of their own in `data`.
      await memory.write({ address: address(executionId, i), owner: "metrics-test", data: LARGE });
    }
    // The maps are shared with other tests: at least this test's entries are there.
    const maps = await poll("the map sizes on /metrics", async () => {
      const sizes = gauge(await metrics(), "memory_map_entries", "map");
      return (sizes.meta ?? 0) >= n && (sizes.data ?? 0) >= n ? sizes : undefined;
    });
    expect(Object.keys(maps).sort()).toEqual(["branches", "data", "locks", "meta"]);
    for (const entries of Object.values(maps)) expect(entries).toBeGreaterThanOrEqual(0);
    await memory.cleanupExecution({ executionId });
  });

  describe("on maps of their own", () => {
    const config = defaultConfig();
    const runtime = ManagedRuntime.make(
      memoryManagerLayer(
        HazelcastMemoryStore.layer({
          members: infra.hazelcastMembers,
          clusterName: HAZELCAST_CLUSTER,
          mapPrefix,
        }),
      ).pipe(
        Layer.provideMerge(telemetryLayer()),
        Layer.provide(Layer.succeed(MeshConfig, config)),
      ),
    );
    const { call } = portCaller(MemoryManagerService, MemoryManager);

    /** `memory.map.entries` by map, as the mesh's Prometheus exporter collects it. */
    const collected = async () => {
      const { prometheus } = await runtime.runPromise(Telemetry);
      const { resourceMetrics } = await prometheus.collect();
      const sizes: Record<string, number> = {};
      for (const scope of resourceMetrics.scopeMetrics)
        for (const metric of scope.metrics)
          if (metric.descriptor.name === "memory.map.entries")
            for (const point of metric.dataPoints)
              sizes[String(point.attributes.map)] = point.value as number;
      return sizes;
    };

    afterAll(async () => {
      await runtime.dispose();
      const client = await Client.newHazelcastClient(hazelcastClientConfig(infra.hazelcastMembers));
      try {
        for (const map of ["meta", "data", "branches", "locks"]) {
          await (await client.getMap(`${mapPrefix}${map}`)).destroy();
        }
      } finally {
        await client.shutdown();
      }
    });

    it("grow by N after N allocations and go back after the cleanup", async () => {
      // Once the client has connected, the maps are there and empty.
      const before = await poll("the first map sizes", async () => {
        const sizes = await collected();
        return sizes.meta !== undefined ? sizes : undefined;
      });
      expect(before).toEqual({ meta: 0, data: 0, branches: 0, locks: 0 });

      const executionId = exec("own");
      const n = 25;
      await runtime.runPromise(
        Effect.forEach(
          Array.from({ length: n }, (_, i) => i),
          (i) =>
            Effect.zipRight(
              call("allocate", { address: address(executionId, i), owner: "metrics-test" }),
              call("write", {
                address: address(executionId, i),
                owner: "metrics-test",
                data: LARGE,
              }),
            ),
          { concurrency: 5, discard: true },
        ),
      );
      await runtime.runPromise(
        call("tryLock", {
          resource: { kind: { case: "name", value: `metrics-${suffix}` } },
          holder: "metrics-test",
        }),
      );
      const grown = await poll("the sizes after the allocations", async () => {
        const sizes = await collected();
        return sizes.meta === n ? sizes : undefined;
      });
      expect(grown).toEqual({ meta: n, data: n, branches: 0, locks: 1 });

      await runtime.runPromise(call("cleanupExecution", { executionId }));
      const cleaned = await poll("the sizes after the cleanup", async () => {
        const sizes = await collected();
        return sizes.meta === 0 && sizes.data === 0 ? sizes : undefined;
      });
      expect(cleaned.meta).toBe(0);
    });
  });
});
