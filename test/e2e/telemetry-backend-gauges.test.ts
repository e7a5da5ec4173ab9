/**
 * The backend gauges without real backends: the embedded stores have no
 * pool and report no map sizes (no series at all), and backends that accept
 * connections but never answer (a MongoDB and a Hazelcast "black hole")
 * never hold up `/metrics`: the pool gauge is counted in process, and the
 * map sizes are waited for 250 ms at most. The real numbers are checked on
 * FerretDB and Hazelcast in test/integration/telemetry-backend-metrics.test.ts.
 */
import { createServer, type Server, type Socket } from "node:net";
import { Option, Redacted } from "effect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultConfig } from "../../src/config.js";
import { startMesh, type TestMesh } from "../support/mesh.js";

const sockets = new Set<Socket>();
let blackHole: Server;
let port: number;
beforeAll(async () => {
  blackHole = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => blackHole.listen(0, "127.0.0.1", resolve));
  port = (blackHole.address() as { port: number }).port;
});
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => blackHole.close(resolve));
});

const scrape = async (mesh: TestMesh) => {
  const started = performance.now();
  const text = await (await fetch(`${mesh.url}/metrics`)).text();
  return { text, ms: performance.now() - started };
};

const samples = (exposition: string, name: string) =>
  exposition.split("\n").filter((line) => line.startsWith(`${name}{`));

describe("backend gauges", () => {
  it("embedded backends: no pool and no map-size series", async () => {
    const mesh = await startMesh();
    try {
      const { text } = await scrape(mesh);
      // Registered metrics of the mesh are there (the exposition is not empty)…
      expect(text).toContain("# TYPE");
      // …but the embedded stores have nothing to report here.
      expect(text).not.toContain("datastore_pool_connections");
      expect(text).not.toContain("memory_map_entries");
    } finally {
      await mesh.close();
    }
  });

  it("backends that never answer do not hold up /metrics", async () => {
    const defaults = defaultConfig();
    const mesh = await startMesh({
      datastore: {
        ...defaults.datastore,
        mongodbUri: Option.some(Redacted.make(`mongodb://127.0.0.1:${port}`)),
        mongodbDatabase: "never_answers",
      },
      memory: { ...defaults.memory, hazelcastMembers: [`127.0.0.1:${port}`] },
    });
    try {
      for (let i = 0; i < 3; i++) {
        const { text, ms } = await scrape(mesh);
        expect(ms).toBeLessThan(1_500);
        // No connection was ever established: the pool is empty, and says so.
        expect(samples(text, "datastore_pool_connections").map((l) => l.split(" ").at(-1))).toEqual(
          ["0", "0"],
        );
        // No size could be polled: no sample rather than a made-up one.
        expect(samples(text, "memory_map_entries")).toEqual([]);
        await new Promise((resolve) => setTimeout(resolve, 1_100));
      }
    } finally {
      await mesh.close();
    }
  }, 30_000);
});
