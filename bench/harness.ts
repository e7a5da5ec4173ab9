/**
 * What every benchmark pair shares: the two phases each side of a pair is
 * measured in (throughput at a fixed number of concurrent calls, closed loop;
 * latency at a fixed request rate, open loop), rounds interleaved A, B, A, B…
 * so machine drift hits both sides, percentiles, and the CPU and memory of the
 * server processes read from /proc while the load runs.
 *
 * A side is anything that can produce those two samples: an off-the-shelf
 * load generator in its own process (bench/tools.ts), or the in-process Node
 * load below, kept for the pairs whose baseline is a driver call (findOne,
 * IMap.get, kafkajs send) that no external tool can issue.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

const argv = process.argv.slice(2);
/** `npm run bench -- --quick`: seconds per pair, for CI; asserts nothing about speed. */
export const quick = argv.includes("--quick");

export const settings = {
  rounds: quick ? 1 : 5,
  /** Length of one measured run of one side. */
  seconds: quick ? 1 : 5,
  warmupSeconds: quick ? 0.5 : 2,
  /** Concurrent calls (streams, connections or callers) of the throughput phase. */
  concurrency: 16,
} as const;

export type Settings = { readonly [K in keyof typeof settings]: number };

/** One run of one side: what a load generator reports. Latencies in ms. */
export interface Sample {
  readonly latencies: ReadonlyArray<number>;
  /** Calls (or messages) completed; equals `latencies.length` unless the tool only counts. */
  readonly count: number;
  readonly seconds: number;
  readonly errors: number;
}

export interface Summary {
  readonly count: number;
  readonly seconds: number;
  readonly rps: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly errors: number;
}

const percentile = (sorted: ArrayLike<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;

/** Pools the runs of one side: percentiles over every latency, rate over the summed time. */
export const summarize = (runs: ReadonlyArray<Sample>): Summary => {
  const all = Float64Array.from(runs.flatMap((r) => r.latencies)).sort();
  const count = runs.reduce((s, r) => s + r.count, 0);
  const seconds = runs.reduce((s, r) => s + r.seconds, 0);
  return {
    count,
    seconds,
    rps: count / seconds,
    p50: percentile(all, 0.5),
    p90: percentile(all, 0.9),
    p99: percentile(all, 0.99),
    max: all[all.length - 1] ?? Number.NaN,
    errors: runs.reduce((s, r) => s + r.errors, 0),
  };
};

// ---- in-process Node load -------------------------------------------------

/** `settings.concurrency` callers, each issuing its next call when its last returns. */
export const closedLoop = async (
  call: () => Promise<unknown>,
  seconds: number,
  concurrency: number = settings.concurrency,
): Promise<Sample> => {
  const latencies: number[] = [];
  let errors = 0;
  const until = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < until) {
      const t = performance.now();
      try {
        await call();
        latencies.push(performance.now() - t);
      } catch {
        errors++;
      }
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  return {
    latencies,
    count: latencies.length,
    seconds: (performance.now() - started) / 1000,
    errors,
  };
};

/** Beyond this many calls in flight the open loop counts the next ones as errors (a side that cannot keep up). */
const MAX_IN_FLIGHT = 2000;

/**
 * Open loop: call `i` is issued at `i / rps` seconds whether or not earlier
 * ones have returned, so a slow server queues work instead of slowing the
 * generator down (no coordinated omission). Timers tick at ~1 ms, so calls
 * due in the same millisecond leave together. Latency runs from the moment
 * the call is issued to its answer, as ghz and autocannon measure it.
 */
export const openLoop = async (
  call: () => Promise<unknown>,
  rps: number,
  seconds: number,
): Promise<Sample> => {
  const latencies: number[] = [];
  let errors = 0;
  let issued = 0;
  let inFlight = 0;
  let drained: (() => void) | undefined;
  const start = performance.now();
  const end = start + seconds * 1000;
  const issue = () => {
    if (inFlight >= MAX_IN_FLIGHT) {
      errors++;
      return;
    }
    inFlight++;
    const t = performance.now();
    call()
      .then(
        () => latencies.push(performance.now() - t),
        () => errors++,
      )
      .finally(() => {
        if (--inFlight === 0) drained?.();
      });
  };
  for (let now = start; now < end; now = performance.now()) {
    const due = Math.min(Math.floor(((now - start) / 1000) * rps) + 1, Math.ceil(seconds * rps));
    while (issued < due) {
      issued++;
      issue();
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  if (inFlight > 0) await new Promise<void>((r) => (drained = r));
  // Until the last answer (as ghz's --duration-stop=wait counts it): a side that
  // fell behind shows a completion rate below the rate it was offered.
  return {
    latencies,
    count: latencies.length,
    seconds: (performance.now() - start) / 1000,
    errors,
  };
};

// ---- the processes a side charges its cost to ------------------------------

const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100; // USER_HZ on every Linux architecture Node runs on
  }
})();

/** User + system CPU seconds of a process so far, every thread included (/proc/<pid>/stat). */
export const cpuSeconds = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the parenthesised command name (which may hold spaces): state is field 3,
  // utime field 14, stime field 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
};

/** Peak resident set size of a process so far, MiB (VmHWM). */
export const peakRssMiB = (pid: number): number => {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m?.[1] === undefined ? Number.NaN : Number(m[1]) / 1024;
};

// ---- pairs ----------------------------------------------------------------

export interface Side {
  /** What is measured, e.g. "mesh, gRPC" or "direct findOne". */
  readonly label: string;
  /** How it is loaded, e.g. "h2load + ghz" or "in-process Node (the grpc-js channel)". */
  readonly tool: string;
  /**
   * Server processes whose CPU and memory this side is charged with (the
   * mesh, the bare server; empty for a driver called in the bench process).
   */
  readonly pids: ReadonlyArray<number>;
  /**
   * Further processes whose CPU (not memory) the side is charged with: a
   * shared backend the call runs in, the bench process when it makes the call.
   */
  readonly cpuAlso?: ReadonlyArray<number>;
  /** One closed-loop run at `settings.concurrency`, for about `seconds`. */
  readonly throughput: (seconds: number) => Promise<Sample>;
  /** One open-loop run at `rps` for `seconds`; absent for throughput-only pairs. */
  readonly latency?: (rps: number, seconds: number) => Promise<Sample>;
}

export interface SideResult {
  readonly label: string;
  readonly tool: string;
  readonly throughput: Summary;
  readonly latency?: Summary;
  /** CPU seconds of `pids` and `cpuAlso` per 1,000 calls, over the throughput phase. */
  readonly cpuPer1k?: number;
  /** Sum of the peak RSS of `pids` at the end of the pair. */
  readonly peakRssMiB?: number;
  /** Each round on its own, in order (drift shows here). */
  readonly rounds?: {
    readonly throughput: ReadonlyArray<Summary>;
    readonly latency?: ReadonlyArray<Summary>;
  };
}

export interface PairResult {
  readonly a: SideResult;
  /** Absent for a context row that has nothing to compare with (the floor). */
  readonly b?: SideResult;
  /** The fixed rate both sides' latency phase ran at. */
  readonly latencyRps?: number;
  /** Set when the latency phase was paired: both sides at once, half of `latencyRps` each. */
  readonly paired?: true;
  /** The rate the pair's rule asked for, when it was lowered to `latencyRps` (see `sustainedRate`). */
  readonly requestedRps?: number;
}

/**
 * The rate of the latency phase: `"b"` is half the baseline's measured
 * throughput (the issue's "half the bare server's saturation rate"); `"min"`
 * is half the slower side's, so both sides can sustain it.
 */
export type RateRule = "b" | "min";

/** A side queues at a rate when its p90 there is more than this many times its p90 at half the rate. */
const QUEUEING_FACTOR = 2;
/** The lowest rate tried: this fraction of the requested one. */
const LOWEST_FRACTION = 1 / 16;
/** Length of one calibration run. */
const PROBE_SECONDS = quick ? 0.5 : 2;

/**
 * The highest rate, from `requested` down by halves, at which neither side
 * queues: each completes at least 97 % of the calls issued, and its p90
 * there is within QUEUEING_FACTOR of its p90 at half the rate (the knee
 * where a queue starts to form). On two cores the load generator takes CPU
 * from the server it loads, so a rate the closed-loop phase sustained (with
 * h2load, which needs little CPU) can still queue under the open-loop
 * generator; percentiles measured there would compare queues, not the cost
 * of a call. (Under very light load, p50 rises again on this kind of
 * machine, as idle cores take long to wake: a light-load baseline would
 * mislead, hence the comparison with half the rate.)
 */
const sustainedRate = async (
  sides: ReadonlyArray<Side & Required<Pick<Side, "latency">>>,
  requested: number,
): Promise<number> => {
  const lowest = Math.max(1, Math.round(requested * LOWEST_FRACTION));
  const measured = new Map<string, Summary>();
  const at = async (index: number, rps: number) => {
    const key = `${index}@${rps}`;
    let summary = measured.get(key);
    if (summary === undefined) {
      summary = summarize([
        await (sides[index] as (typeof sides)[number]).latency(rps, PROBE_SECONDS),
      ]);
      measured.set(key, summary);
    }
    return summary;
  };
  let rps = requested;
  while (rps > lowest) {
    const half = Math.max(1, Math.round(rps / 2));
    let queues = false;
    for (let i = 0; i < sides.length && !queues; i++) {
      const here = await at(i, rps);
      queues = here.rps < rps * 0.97 || here.p90 > QUEUEING_FACTOR * (await at(i, half)).p90;
    }
    if (!queues) break;
    rps = half;
  }
  return rps;
};

/** Set by bench/run.ts while profiling a pair that missed its target (see there). */
export const profiling: {
  pair?: string;
  seconds: number;
  /** CLOCK_MONOTONIC µs (the clock of V8's profiles) while the profiled load ran. */
  window?: readonly [number, number];
} = { seconds: quick ? 3 : 10 };

/** CLOCK_MONOTONIC in µs: process.hrtime and V8's CPU profiles share it. */
export const monotonicMicros = () => Number(process.hrtime.bigint() / 1000n);

const charged = (side: Side) => [...side.pids, ...(side.cpuAlso ?? [])];

const measure = async (side: Side, run: () => Promise<Sample>) => {
  const before = charged(side).map(cpuSeconds);
  const sample = await run();
  const cpu = charged(side).reduce((s, pid, i) => s + cpuSeconds(pid) - (before[i] ?? 0), 0);
  return { sample, cpu };
};

/**
 * A latency phase that loads both sides at once from one generator, its
 * calls alternating between them (bench/tools.ts `pairedGrpcLatency`), for
 * a difference smaller than what drifts between rounds run one after the
 * other. `round` says which side's call goes first.
 */
export type PairedLatency = (
  rps: number,
  seconds: number,
  round: number,
) => Promise<{ readonly a: Sample; readonly b: Sample }>;

const placeholder: SideResult = {
  label: "",
  tool: "",
  throughput: summarize([{ latencies: [], count: 0, seconds: 1, errors: 0 }]),
};

/**
 * Warms both sides up, runs their throughput phase interleaved, then (when
 * both sides have one) their latency phase at a fixed rate derived from the
 * measured throughputs, interleaved too; or, with `paired`, both sides at
 * once, half the rate each, over an even number of rounds so each side goes
 * first equally often.
 */
export const comparePair = async (
  name: string,
  a: Side,
  b: Side,
  rule: RateRule = "min",
  paired?: PairedLatency,
): Promise<PairResult> => {
  if (profiling.pair !== undefined) {
    // Only side A of the pair being profiled runs, long enough for a profile.
    if (profiling.pair !== name) return { a: placeholder, b: placeholder };
    await a.throughput(settings.warmupSeconds);
    const from = monotonicMicros();
    await a.throughput(profiling.seconds);
    profiling.window = [from, monotonicMicros()];
    return { a: placeholder, b: placeholder };
  }
  console.error(`  ${name}: warming up`);
  await a.throughput(settings.warmupSeconds);
  await b.throughput(settings.warmupSeconds);
  const runs = { a: [] as Sample[], b: [] as Sample[] };
  const cpu = { a: 0, b: 0 };
  for (let round = 0; round < settings.rounds; round++) {
    for (const [key, side] of [
      ["a", a],
      ["b", b],
    ] as const) {
      const m = await measure(side, () => side.throughput(settings.seconds));
      runs[key].push(m.sample);
      cpu[key] += m.cpu;
    }
  }
  const throughput = { a: summarize(runs.a), b: summarize(runs.b) };
  console.error(
    `  ${name}: throughput ${throughput.a.rps.toFixed(0)} vs ${throughput.b.rps.toFixed(0)} /s`,
  );
  let latencyRps: number | undefined;
  let requestedRps: number | undefined;
  const latency: { a?: Summary; b?: Summary } = {};
  let lat: { a: Sample[]; b: Sample[] } | undefined;
  if (a.latency !== undefined && b.latency !== undefined) {
    const base = rule === "b" ? throughput.b.rps : Math.min(throughput.a.rps, throughput.b.rps);
    requestedRps = Math.max(1, Math.round(base / 2));
    latencyRps = await sustainedRate(
      [
        { ...a, latency: a.latency },
        { ...b, latency: b.latency },
      ],
      requestedRps,
    );
    if (latencyRps !== requestedRps)
      console.error(
        `  ${name}: ${requestedRps}/s queues; the latency phase runs at ${latencyRps}/s`,
      );
    lat = { a: [], b: [] };
    if (paired === undefined)
      for (let round = 0; round < settings.rounds; round++) {
        lat.a.push(await a.latency(latencyRps, settings.seconds));
        lat.b.push(await b.latency(latencyRps, settings.seconds));
      }
    else
      for (let round = 0; round < 2 * Math.ceil(settings.rounds / 2); round++) {
        const both = await paired(latencyRps, settings.seconds, round);
        lat.a.push(both.a);
        lat.b.push(both.b);
      }
    latency.a = summarize(lat.a);
    latency.b = summarize(lat.b);
    console.error(
      `  ${name}: at ${latencyRps}/s p50 ${latency.a.p50.toFixed(3)} vs ${latency.b.p50.toFixed(3)} ms`,
    );
  }
  const each = (samples: ReadonlyArray<Sample>) => samples.map((x) => summarize([x]));
  const result = (key: "a" | "b", side: Side): SideResult => ({
    label: side.label,
    tool: side.tool,
    throughput: throughput[key],
    ...(latency[key] === undefined ? {} : { latency: latency[key] }),
    rounds: {
      throughput: each(runs[key]),
      ...(lat === undefined ? {} : { latency: each(lat[key]) }),
    },
    ...(charged(side).length === 0 ? {} : { cpuPer1k: (cpu[key] / throughput[key].count) * 1000 }),
    ...(side.pids.length === 0
      ? {}
      : { peakRssMiB: side.pids.reduce((s, pid) => s + peakRssMiB(pid), 0) }),
  });
  return {
    a: result("a", a),
    b: result("b", b),
    ...(latencyRps === undefined ? {} : { latencyRps }),
    ...(paired === undefined || latencyRps === undefined ? {} : { paired: true as const }),
    ...(requestedRps === undefined || requestedRps === latencyRps ? {} : { requestedRps }),
  };
};

// ---- rows of RESULTS.md ------------------------------------------------------

export interface Target {
  /** Side A's throughput over side B's, at least. */
  readonly minRatio?: number;
  /** Side A's p50 minus side B's at the latency phase's rate, at most (ms). */
  readonly maxAddedP50?: number;
  /** The same at p99. */
  readonly maxAddedP99?: number;
}

export interface Row {
  /** The pair as RESULTS.md names it. */
  readonly name: string;
  readonly result: PairResult;
  /** Absent: for orientation only. */
  readonly target?: Target;
  /** What the rate column counts, "req/s" unless said. */
  readonly unit?: string;
  /** Anything a reader needs to read the row right. */
  readonly note?: string;
}

/** A group of pairs sharing set-up (servers, backends). Runs them and returns their rows. */
export interface PairGroup {
  readonly id: string;
  readonly title: string;
  /** Needs the real backends of test/infra. */
  readonly infra: boolean;
  readonly run: (ctx: GroupContext) => Promise<Row[]>;
}

export interface GroupContext {
  readonly infra?: {
    readonly mongodbUri: string;
    readonly kafkaBrokers: ReadonlyArray<string>;
    readonly hazelcastMembers: ReadonlyArray<string>;
  };
  /** Where to write the mesh's V8 CPU profile, when profiling (bench/servers.ts reads it). */
  readonly profileDir?: string;
}
