/**
 * DataStore GetEntity through the mesh vs the same findOne issued directly
 * with the driver: same FerretDB, same pool size, same concurrency, rounds
 * interleaved (mesh, direct, mesh, direct…) so machine drift hits both.
 *
 *   npm run bench:datastore            # 5 rounds of 5 s per side
 *   npm run bench:datastore -- --quick # a smoke run of a few seconds
 *
 * Writes bench/results/datastore-get.json and prints a Markdown table.
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { MongoClient } from "mongodb";
import { DataStoreService } from "../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { up } from "../test/infra/index.js";
import { spawnMesh } from "../test/support/process.js";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 1 : 5;
const SECONDS = quick ? 1 : 5;
const CONCURRENCY = 16;
const POOL = 50; // the mesh adapter's maxPoolSize

/** Closed loop: `CONCURRENCY` callers each issuing the next request when the last returns. */
const load = async (call: () => Promise<unknown>, seconds: number) => {
  const latencies: number[] = [];
  const until = performance.now() + seconds * 1000;
  const cpuBefore = process.cpuUsage();
  const worker = async () => {
    while (performance.now() < until) {
      const t = performance.now();
      await call();
      latencies.push(performance.now() - t);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const elapsed = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  return { latencies, elapsed, clientCpuMs: (cpu.user + cpu.system) / 1000 };
};

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;

const summarize = (runs: Array<Awaited<ReturnType<typeof load>>>) => {
  const all = runs.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const seconds = runs.reduce((s, r) => s + r.elapsed, 0);
  return {
    requests: all.length,
    rps: all.length / seconds,
    p50: percentile(all, 0.5),
    p90: percentile(all, 0.9),
    p99: percentile(all, 0.99),
    max: all[all.length - 1] ?? NaN,
  };
};

const infra = await up({ log: (l) => console.error(l) });
const database = `bench_${randomUUID().slice(0, 8)}`;
const mesh = await spawnMesh({
  FO_MONGODB_URI: infra.mongodbUri,
  FO_MONGODB_DATABASE: database,
});
try {
  const client = createClient(DataStoreService, createGrpcTransport({ baseUrl: mesh.url }));
  const document = { payload: "x".repeat(1000), n: 1 }; // ~1 KiB
  await client.createEntity({ kind: "bench", id: "doc-1", document });

  const direct = new MongoClient(infra.mongodbUri, {
    maxPoolSize: POOL,
    serverSelectionTimeoutMS: 2000,
  });
  const entities = direct.db(database).collection<{ _id: string }>("entities");
  const viaMesh = () => client.getEntity({ kind: "bench", id: "doc-1" });
  const viaDriver = async () => {
    if ((await entities.findOne({ _id: "bench:doc-1" })) === null)
      throw new Error("seed document missing");
  };

  // Warm up both paths (JIT, connection pools).
  await load(viaMesh, quick ? 0.3 : 2);
  await load(viaDriver, quick ? 0.3 : 2);
  const meshRuns = [];
  const directRuns = [];
  for (let round = 0; round < ROUNDS; round++) {
    meshRuns.push(await load(viaMesh, SECONDS));
    directRuns.push(await load(viaDriver, SECONDS));
  }
  await direct.close();

  const m = summarize(meshRuns);
  const d = summarize(directRuns);
  const result = {
    date: new Date().toISOString(),
    machine: { cpu: cpus()[0]?.model ?? "unknown", cores: cpus().length, node: process.version },
    setup: {
      rounds: ROUNDS,
      secondsPerRound: SECONDS,
      concurrency: CONCURRENCY,
      pool: POOL,
      quick,
    },
    mesh: m,
    direct: d,
    p50AddedMs: m.p50 - d.p50,
    throughputRatio: m.rps / d.rps,
  };
  mkdirSync("bench/results", { recursive: true });
  writeFileSync("bench/results/datastore-get.json", `${JSON.stringify(result, null, 2)}\n`);
  const ms = (x: number) => x.toFixed(3);
  console.log(
    `\nGetEntity (1 KiB) via mesh vs direct findOne, FerretDB, concurrency ${CONCURRENCY}, ${ROUNDS}×${SECONDS}s interleaved`,
  );
  console.log("| path | req/s | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|");
  for (const [name, s] of [
    ["mesh GetEntity (gRPC)", m],
    ["direct findOne", d],
  ] as const) {
    console.log(
      `| ${name} | ${s.rps.toFixed(0)} | ${ms(s.p50)} | ${ms(s.p90)} | ${ms(s.p99)} | ${ms(s.max)} |`,
    );
  }
  console.log(
    `\nmesh adds ${ms(result.p50AddedMs)} ms at p50 (target ≤ 0.150); throughput ${(result.throughputRatio * 100).toFixed(0)} % of direct (target ≥ 80 %)`,
  );
} finally {
  mesh.child.kill("SIGTERM");
  await mesh.exited;
}
process.exit(0);
