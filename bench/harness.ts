/**
 * What every benchmark pair shares: a closed-loop load of N concurrent
 * callers, percentiles, interleaved rounds (A, B, A, B…) so machine drift hits
 * both sides, and the JSON + Markdown report with the machine description.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";

export const quick = process.argv.includes("--quick");
export const ROUNDS = quick ? 1 : 5;
export const SECONDS = quick ? 1 : 5;
export const CONCURRENCY = 16;

interface Run {
  readonly latencies: number[];
  readonly elapsed: number;
}

/** `CONCURRENCY` callers, each issuing the next request when its last returns. */
const load = async (call: () => Promise<unknown>, seconds: number): Promise<Run> => {
  const latencies: number[] = [];
  const until = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < until) {
      const t = performance.now();
      await call();
      latencies.push(performance.now() - t);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { latencies, elapsed: (performance.now() - started) / 1000 };
};

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;

export interface Summary {
  readonly requests: number;
  readonly rps: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

const summarize = (runs: Run[]): Summary => {
  const all = runs.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const seconds = runs.reduce((s, r) => s + r.elapsed, 0);
  return {
    requests: all.length,
    rps: all.length / seconds,
    p50: percentile(all, 0.5),
    p90: percentile(all, 0.9),
    p99: percentile(all, 0.99),
    max: all[all.length - 1] ?? Number.NaN,
  };
};

/** A throughput-only result: `count` items in `seconds` (no per-request latencies). */
export const throughput = (count: number, seconds: number): Summary => ({
  requests: count,
  rps: count / seconds,
  p50: Number.NaN,
  p90: Number.NaN,
  p99: Number.NaN,
  max: Number.NaN,
});

/** Warms both sides up, then runs them interleaved; returns [mesh, direct]. */
export const comparePair = async (
  viaMesh: () => Promise<unknown>,
  direct: () => Promise<unknown>,
): Promise<[Summary, Summary]> => {
  await load(viaMesh, quick ? 0.3 : 2);
  await load(direct, quick ? 0.3 : 2);
  const meshRuns: Run[] = [];
  const directRuns: Run[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    meshRuns.push(await load(viaMesh, SECONDS));
    directRuns.push(await load(direct, SECONDS));
  }
  return [summarize(meshRuns), summarize(directRuns)];
};

export interface PairResult {
  readonly name: string;
  readonly meshLabel: string;
  readonly directLabel: string;
  readonly mesh: Summary;
  readonly direct: Summary;
  /** What the issue asks: added p50 (omitted for throughput-only pairs) and throughput ratio. */
  readonly target?: { readonly p50AddedMs?: number; readonly ratio: number };
}

/** Writes `bench/results/<file>.json` and prints a Markdown table with the target check. */
export const report = (file: string, title: string, pairs: ReadonlyArray<PairResult>) => {
  const result = {
    date: new Date().toISOString(),
    machine: { cpu: cpus()[0]?.model ?? "unknown", cores: cpus().length, node: process.version },
    setup: { rounds: ROUNDS, secondsPerRound: SECONDS, concurrency: CONCURRENCY, quick },
    pairs: pairs.map((p) => ({
      ...p,
      p50AddedMs: p.mesh.p50 - p.direct.p50,
      throughputRatio: p.mesh.rps / p.direct.rps,
    })),
  };
  mkdirSync("bench/results", { recursive: true });
  writeFileSync(`bench/results/${file}.json`, `${JSON.stringify(result, null, 2)}\n`);
  const ms = (x: number) => x.toFixed(3);
  console.log(`\n${title}, concurrency ${CONCURRENCY}, ${ROUNDS}×${SECONDS}s interleaved`);
  console.log("| path | req/s | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|");
  for (const p of result.pairs) {
    for (const [label, s] of [
      [p.meshLabel, p.mesh],
      [p.directLabel, p.direct],
    ] as const) {
      console.log(
        `| ${label} | ${s.rps.toFixed(0)} | ${ms(s.p50)} | ${ms(s.p90)} | ${ms(s.p99)} | ${ms(s.max)} |`,
      );
    }
    const target = p.target ?? { p50AddedMs: 0.15, ratio: 0.8 };
    const latency =
      target.p50AddedMs === undefined
        ? ""
        : `mesh adds ${ms(p.p50AddedMs)} ms at p50 (target ≤ ${ms(target.p50AddedMs)}); `;
    console.log(
      `${p.name}: ${latency}throughput ${(p.throughputRatio * 100).toFixed(0)} % of direct (target ≥ ${(target.ratio * 100).toFixed(0)} %)`,
    );
  }
};
