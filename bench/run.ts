/**
 * `npm run bench`: every pair of issue #9 in one go. Builds or finds the load
 * generators, starts the real backends through test/infra when a selected
 * pair needs them (and stops only what it started), runs each group of pairs
 * (each starts its own mesh and baseline processes and stops them), then
 * profiles the pairs that miss their target and writes `bench/RESULTS.md` and
 * `bench/results.json`.
 *
 *   npm run bench                      # the full run (about half an hour)
 *   npm run bench -- --quick           # smoke run, seconds per pair; CI runs it
 *   npm run bench -- --only=transport,forward
 *   npm run bench -- --no-profile       # skip profiling the pairs that miss their target
 *   npm run bench -- --quick --profile  # profile even a smoke run (to try the profiling)
 *   npm run bench -- --render           # RESULTS.md again from results.json, no measuring
 *
 * A quick run or one limited by `--only` writes to the git-ignored
 * `.cache/bench/` instead, so the committed results are always a full run.
 * It fails (exit 1) when a pair could not run or a side's calls failed; never
 * because of a speed.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { type BackendName, down, upDetailed } from "../test/infra/index.js";
import { repoRoot } from "../test/infra/process.js";
import { backends } from "./backends.js";
import { datastore } from "./datastore-get.js";
import { forward } from "./forward.js";
import {
  type GroupContext,
  type PairGroup,
  profiling,
  quick,
  type Row,
  type Settings,
  settings,
} from "./harness.js";
import { memory } from "./memory-rw.js";
import { messagebus } from "./messagebus.js";
import { native } from "./native.js";
import { type ProfileSummary, summarizeProfile } from "./profile.js";
import { isMet, type Results, writeJson, writeMarkdown } from "./report.js";
import { running } from "./servers.js";
import { prepareTools, scratch, toolVersions } from "./tools.js";
import { tracing } from "./tracing.js";
import { transport } from "./transport.js";

const groups: PairGroup[] = [
  native,
  transport,
  datastore,
  memory,
  messagebus,
  tracing,
  forward,
  backends,
];

const option = (name: string) =>
  process.argv
    .slice(2)
    .find((a) => a.startsWith(`--${name}=`))
    ?.slice(name.length + 3);
const only = option("only")?.split(",");
const unknown = only?.filter((id) => !groups.some((g) => g.id === id)) ?? [];
if (unknown.length > 0) {
  console.error(
    `unknown pair group ${unknown.join(", ")}; known: ${groups.map((g) => g.id).join(", ")}`,
  );
  process.exit(2);
}
const selected = groups.filter((g) => only === undefined || only.includes(g.id));
const profile =
  process.argv.includes("--profile") || (!quick && !process.argv.includes("--no-profile"));
const outDir = quick || only !== undefined ? scratch : join(repoRoot, "bench");

const method = (
  run: Settings,
) => `How each pair runs: both sides warm up for ${run.warmupSeconds} s; then the **throughput phase**, closed loop at ${run.concurrency} concurrent calls, ${run.rounds} rounds of ${run.seconds} s per side interleaved (A, B, A, B…); then the **latency phase**, open loop (calls leave on schedule whether or not earlier ones have returned) at a fixed rate, again ${run.rounds} × ${run.seconds} s interleaved. The rate is half of side B's throughput for the transport and tracing pairs (the bare server's, the untraced mesh's: "half the bare server's saturation rate", as the issue defines it), half the slower side's otherwise. That rate is then checked with short open-loop runs: where a side queues there (it finishes under 97 % of the calls issued, or its p90 is more than twice its p90 at half the rate, because on two cores the open-loop generator takes CPU from the server), the rate is halved until neither side does, and the row says so. Percentiles measured in a queue would compare queues, not the cost of a call. Percentiles pool every call of the rounds.

Load generators: gRPC pairs use **h2load** for throughput (4 connections × 4 streams; C, so it takes little CPU from the server on two cores; the servers are pinned to the first core and h2load to the second with \`taskset\`, so throughput and CPU per call are one core's) and **ghz** for latency (\`--rps --async\`, one core, checks every call's grpc-status); Connect over HTTP/1.1 uses **h2load** \`--h1\` for throughput (16 keep-alive connections, one request at a time on each; pinned as for gRPC; a call counts when answered 200) and **autocannon** for latency (the same 16 connections; \`overallRate\` for the fixed rate). Pairs whose baseline is a driver call (findOne, IMap.get / set, kafkajs send, eachBatch) cannot use an external tool for that side, so **both** of their sides are loaded by the bench process itself (Node, the mesh called through the grpc-js channel of its own client, MeshClient's default, over one HTTP/2 connection to its native gRPC port; it takes about half the CPU per call of connect-node's gRPC client): the mesh side's figures include that client's cost. The Write vs Read pair is the mesh on both sides: **ghz** loads it from the second core, cycling through 64 addresses (h2load sends one body, and writes to one address queue behind each other).`;

/** `--render`: RESULTS.md again from results.json, without measuring (for changes to the report's wording). */
if (process.argv.includes("--render")) {
  const results = JSON.parse(readFileSync(join(outDir, "results.json"), "utf8")) as Results;
  writeMarkdown(outDir, results, method(results.settings));
  console.error(`== wrote ${join(outDir, "RESULTS.md")} from results.json`);
  process.exit(0);
}

const log = (line: string) => console.error(line);
const started = performance.now();
const startLoad = loadavg()[0] ?? 0;
const failures: string[] = [];
let startedInfra: BackendName[] = [];

const stopServers = () => Promise.all([...running].map((s) => s.stop()));

try {
  log(`== tools`);
  await prepareTools(log);
  const ctx: { infra?: GroupContext["infra"] } = {};
  if (selected.some((g) => g.infra)) {
    log("== real backends (test/infra)");
    const up = await upDetailed({ log });
    startedInfra = up.started;
    ctx.infra = up.addresses;
  }
  const rows: Array<Row & { group: string }> = [];
  for (const group of selected) {
    log(`== ${group.title}`);
    try {
      for (const row of await group.run(ctx)) rows.push({ ...row, group: group.id });
    } catch (err) {
      failures.push(`${group.title}: ${(err as Error).stack ?? String(err)}`);
    } finally {
      await stopServers();
    }
  }
  for (const row of rows) {
    for (const side of [row.result.a, row.result.b]) {
      if (side === undefined) continue;
      for (const s of [side.throughput, side.latency]) {
        if (s === undefined) continue;
        if (s.count === 0 || s.errors > s.count * 0.01)
          failures.push(`${row.name}, ${side.label}: ${s.count} calls, ${s.errors} errors`);
      }
    }
  }

  const profiles: Array<{ name: string; profile: ProfileSummary }> = [];
  if (profile) {
    for (const row of rows.filter((r) => isMet(r) === false)) {
      const group = groups.find((g) => g.id === row.group) as PairGroup;
      log(`== profiling ${row.name}`);
      const dir = join(scratch, "profiles", row.name.replace(/[^A-Za-z0-9]+/g, "-"));
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      profiling.pair = row.name;
      profiling.window = undefined;
      try {
        await group.run({ ...ctx, profileDir: dir });
      } catch (err) {
        log(`profiling ${row.name} failed: ${(err as Error).message}`);
      } finally {
        await stopServers();
        profiling.pair = undefined;
      }
      const files = readdirSync(dir).map((f) => join(dir, f));
      // One mesh is profiled per pair; its profile is the largest file if V8 wrote others.
      const file = files.sort((x, y) => statSync(y).size - statSync(x).size)[0];
      if (file !== undefined && profiling.window !== undefined)
        profiles.push({ name: row.name, profile: summarizeProfile(file, profiling.window) });
    }
  }

  const cpu = cpus();
  const results: Results = {
    date: new Date().toISOString(),
    durationSeconds: (performance.now() - started) / 1000,
    quick,
    machine: {
      cpu: cpu[0]?.model ?? "unknown",
      cores: cpu.length,
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      os: `Linux ${release()}`,
      node: process.version,
      loadAverageAtStart: startLoad,
      loadAverageAtEnd: loadavg()[0] ?? 0,
    },
    settings: { ...settings },
    tools: await toolVersions(),
    rows,
    profiles,
  };
  writeJson(outDir, results);
  writeMarkdown(outDir, results, method(settings));
  log(`== wrote ${join(outDir, "RESULTS.md")} and results.json`);
} catch (err) {
  failures.push((err as Error).stack ?? String(err));
} finally {
  await stopServers();
  if (startedInfra.length > 0) {
    log(`== stopping the backends this run started: ${startedInfra.join(", ")}`);
    await down({ only: startedInfra, log });
  }
}
if (failures.length > 0) {
  console.error(`\n${failures.length} problem(s):\n${failures.join("\n")}`);
  process.exit(1);
}
process.exit(0);
