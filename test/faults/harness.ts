/**
 * What the three fault scenarios share: the mesh as its own process, a
 * steady load of calls that each carry a deadline, a health monitor
 * (`grpc.health.v1` for one service, and `/readyz`), the mesh's memory
 * (right after a full GC, see heap-probe.cjs) and open file descriptors,
 * and the scenario itself: load, kill -9 the backend, keep it down, restart
 * it, load again; then the checks every backend must pass.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { DescService } from "@bufbuild/protobuf";
import {
  type CallOptions,
  type Client,
  Code,
  ConnectError,
  createClient,
} from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { expect } from "vitest";
import {
  Health,
  HealthCheckResponse_ServingStatus as Serving,
} from "../../gen/grpc/health/v1/health_pb.js";
import { type MeshProcess, spawnMesh } from "../support/process.js";

/** The deadline every load call carries. */
export const DEADLINE_MS = 2_000;
/** How much later than its deadline a call may end (timers, GC, two shared cores). */
export const DEADLINE_SLACK_MS = 500;
/** How fast a call to a backend known to be down must fail (with UNAVAILABLE). */
export const FAIL_FAST_MS = 500;
/** How long the backend stays dead. */
export const DOWN_MS = 10_000;
/** Load before the kill. */
export const BEFORE_MS = 8_000;
/** Load once the service is SERVING again. */
export const AFTER_MS = 5_000;
/** Bounds on the health transitions (checks run every 2 s, each bounded by 3 s). */
export const NOT_SERVING_WITHIN_MS = 8_000;
export const SERVING_WITHIN_MS = 20_000;
/**
 * Growth of the mesh's memory, each time measured right after a full GC
 * (heap-probe.cjs), from just before the kill to after recovery: resident
 * memory, and the live JavaScript heap. The live heap is the leak check of
 * what the mesh holds; resident memory catches native leaks, but Node 26
 * keeps more of a load peak resident after a GC (emptied young-generation
 * and old-space pages stay committed, native memory of the busiest moment
 * is not returned): seen +37 to +131 MiB over one outage with the live heap
 * +4 MiB, hence the wider bound.
 */
export const RSS_GROWTH_LIMIT_MIB = 160;
export const HEAP_GROWTH_LIMIT_MIB = 32;
/** Growth of its open file descriptors (sockets, files) over the same span. */
export const FD_GROWTH_LIMIT = 16;
/** Idle time before the memory after recovery is measured. */
const SETTLE_MS = 3_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// The mesh process

export interface Mesh extends MeshProcess {
  readonly pid: number;
  /** The last lines it wrote to stderr. */
  readonly stderrTail: () => string;
  /** Log lines (JSON) at level ERROR or FATAL. */
  readonly errorLines: () => string[];
  /** gRPC (h2c) client, as a polyglot service calls it. */
  readonly client: <S extends DescService>(service: S) => Client<S>;
  /** Its memory right after a full GC, and its open descriptors. */
  readonly stats: () => Promise<ProcessStats>;
  /** SIGTERM; resolves with the exit code (SIGKILL after 20 s: -1). */
  readonly stop: () => Promise<number | null>;
}

const heapProbe = fileURLToPath(new URL("./heap-probe.cjs", import.meta.url));
const MIB = 1024 * 1024;
const mib = (bytes: number) => Math.round((bytes / MIB) * 10) / 10;

/** Spawns the mesh as `npm start` does (test/support/process.ts), with `env`, on a data directory of its own. */
export const startMesh = async (env: Record<string, string>): Promise<Mesh> => {
  const dataDir = await mkdtemp(join(tmpdir(), "fo-faults-mesh-"));
  const process_ = await spawnMesh({
    FO_DATA_DIR: dataDir,
    FO_CONSOLE: "false",
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --require ${JSON.stringify(heapProbe)}`.trim(),
    ...env,
  });
  const pid = process_.child.pid;
  if (pid === undefined) throw new Error("the mesh has no pid");
  // Drained, so a chatty stderr can never block the process on a full pipe.
  let stderr = "";
  let partial = "";
  const probes: Array<(usage: NodeJS.MemoryUsage) => void> = [];
  process_.child.stderr?.setEncoding("utf8").on("data", (d: string) => {
    stderr = (stderr + d).slice(-8_000);
    const lines = (partial + d).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      if (line.startsWith("[heap-probe] ")) probes.shift()?.(JSON.parse(line.slice(13)));
    }
  });
  const transport = createGrpcTransport({ baseUrl: process_.url });
  return {
    ...process_,
    pid,
    stderrTail: () => stderr,
    errorLines: () =>
      process_.lines
        .filter((l) => /"logLevel":"(ERROR|FATAL)"/.test(l))
        .map((l) => l.slice(0, 3000)),
    client: (service) => createClient(service, transport),
    stats: async () => {
      const usage = new Promise<NodeJS.MemoryUsage>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no heap-probe answer in 10 s")), 10_000);
        probes.push((u) => {
          clearTimeout(timer);
          resolve(u);
        });
      });
      process_.child.kill("SIGUSR2");
      const { rss, heapUsed, external } = await usage;
      return {
        rssMiB: mib(rss),
        heapMiB: mib(heapUsed),
        externalMiB: mib(external),
        fds: (await readdir(`/proc/${pid}/fd`)).length,
      };
    },
    stop: async () => {
      if (process_.child.exitCode === null && process_.child.signalCode === null) {
        process_.child.kill("SIGTERM");
      }
      const timer = setTimeout(() => process_.child.kill("SIGKILL"), 20_000);
      const code = await process_.exited;
      clearTimeout(timer);
      await rm(dataDir, { recursive: true, force: true });
      return process_.child.signalCode === "SIGKILL" ? -1 : code;
    },
  };
};

export interface ProcessStats {
  readonly rssMiB: number;
  /** Live JavaScript heap (after a full GC). */
  readonly heapMiB: number;
  /** Memory of C++ objects bound to JavaScript ones (Buffers…). */
  readonly externalMiB: number;
  readonly fds: number;
}

/** Resident memory of a process as it is (Linux /proc), in MiB. */
export const residentMiB = async (pid: number): Promise<number> => {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return mib(Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]) * 1024);
};

// ---------------------------------------------------------------------------
// Load

export interface CallRecord {
  readonly op: string;
  readonly start: number;
  readonly end: number;
  /** undefined: OK. */
  readonly code: Code | undefined;
  readonly message: string;
}

export interface Op {
  readonly name: string;
  /** One call; false when there was nothing to do (e.g. nothing to read yet): not recorded. */
  readonly run: (options: CallOptions) => Promise<unknown>;
}

export interface Load {
  readonly records: CallRecord[];
  /** Stops starting calls; resolves once those in flight ended. */
  readonly stop: () => Promise<void>;
}

/**
 * `workers` loops, each calling the ops in turn (offset by its index), every
 * call with a DEADLINE_MS deadline, pausing `pauseMs` between calls.
 */
export const startLoad = (ops: ReadonlyArray<Op>, workers: number, pauseMs = 20): Load => {
  const records: CallRecord[] = [];
  let stopping = false;
  const worker = async (index: number) => {
    for (let i = index; !stopping; i++) {
      const op = ops[i % ops.length] as Op;
      const start = Date.now();
      try {
        const done = await op.run({ timeoutMs: DEADLINE_MS });
        if (done !== false) {
          records.push({ op: op.name, start, end: Date.now(), code: undefined, message: "" });
        }
      } catch (e) {
        const error = ConnectError.from(e);
        records.push({
          op: op.name,
          start,
          end: Date.now(),
          code: error.code,
          message: error.rawMessage,
        });
      }
      await sleep(pauseMs);
    }
  };
  const running = Array.from({ length: workers }, (_, i) => worker(i));
  return {
    records,
    stop: async () => {
      stopping = true;
      await Promise.all(running);
    },
  };
};

// ---------------------------------------------------------------------------
// Health

/** A client's server stream, held open through a fault run. */
export interface HeldStream {
  /** How each stream ended before `stop`: "ended", or the status code's name. */
  readonly ends: ReadonlyArray<string>;
  /** Ends the stream and waits for its loop to finish. */
  readonly stop: () => Promise<void>;
}

/**
 * Opens a stream and reopens it (after 250 ms) whenever it ends, as a client
 * would, passing every item to `onItem`.
 */
export const holdStream = <T>(
  open: (signal: AbortSignal) => AsyncIterable<T>,
  onItem: (item: T) => void,
): HeldStream => {
  const ends: string[] = [];
  let stopping = false;
  const streams = new AbortController();
  const loop = (async () => {
    while (!stopping) {
      try {
        for await (const item of open(streams.signal)) onItem(item);
        ends.push("ended");
      } catch (e) {
        if (!stopping) ends.push(Code[ConnectError.from(e).code] ?? "?");
      }
      if (!stopping) await sleep(250);
    }
  })();
  return {
    ends,
    stop: async () => {
      stopping = true;
      streams.abort();
      await loop;
    },
  };
};

export interface HealthSample {
  readonly time: number;
  /** The service's grpc.health.v1 status, or the code of a failed check. */
  readonly grpc: "SERVING" | "NOT_SERVING" | string;
  /** HTTP status of /readyz, or 0 when it failed. */
  readonly readyz: number;
}

export interface HealthMonitor {
  readonly samples: HealthSample[];
  /** First sample at or after `from` matching `test`. */
  readonly firstAfter: (
    from: number,
    test: (s: HealthSample) => boolean,
  ) => HealthSample | undefined;
  /** Waits for such a sample; fails after `ms`. */
  readonly waitFor: (
    what: string,
    from: number,
    test: (s: HealthSample) => boolean,
    ms: number,
  ) => Promise<HealthSample>;
  readonly stop: () => Promise<void>;
}

/** Samples the health of `service` and /readyz every 100 ms, over Connect on HTTP/1.1. */
export const monitorHealth = (url: string, service: string): HealthMonitor => {
  const health = createClient(Health, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
  const samples: HealthSample[] = [];
  let stopping = false;
  const sample = async (): Promise<HealthSample> => {
    const [grpc, readyz] = await Promise.all([
      health.check({ service }, { timeoutMs: 1_000 }).then(
        (r) => Serving[r.status],
        (e: unknown) => Code[ConnectError.from(e).code],
      ),
      fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1_000) }).then(
        async (r) => {
          await r.body?.cancel();
          return r.status;
        },
        () => 0,
      ),
    ]);
    return { time: Date.now(), grpc: grpc ?? "?", readyz };
  };
  const loop = (async () => {
    while (!stopping) {
      samples.push(await sample());
      await sleep(100);
    }
  })();
  const firstAfter = (from: number, test: (s: HealthSample) => boolean) =>
    samples.find((s) => s.time >= from && test(s));
  return {
    samples,
    firstAfter,
    waitFor: async (what, from, test, ms) => {
      const until = Date.now() + ms;
      for (;;) {
        const found = firstAfter(from, test);
        if (found !== undefined) return found;
        if (Date.now() > until) {
          const recent = samples.slice(-5).map((s) => `${s.grpc}/${s.readyz}`);
          throw new Error(`${what}: not within ${ms} ms (last samples: ${recent.join(", ")})`);
        }
        await sleep(50);
      }
    },
    stop: async () => {
      stopping = true;
      await loop;
    },
  };
};

export const serving = (s: HealthSample) => s.grpc === "SERVING" && s.readyz === 200;
export const notServing = (s: HealthSample) => s.grpc === "NOT_SERVING" && s.readyz === 503;

// ---------------------------------------------------------------------------
// The scenario

export interface Backend {
  readonly kill: () => Promise<void>;
  readonly start: () => Promise<void>;
}

export interface Timeline {
  readonly loadStart: number;
  readonly kill: number;
  readonly notServing: number;
  readonly restart: number;
  /** The backend answered its own readiness probe again. */
  readonly backendReady: number;
  readonly serving: number;
  readonly loadEnd: number;
}

export interface FaultRun {
  readonly timeline: Timeline;
  readonly records: CallRecord[];
  /** The mesh just before the kill. */
  readonly before: ProcessStats;
  /** RSS (MiB) of the mesh once a second, as it is (no GC), from the load's start to its end. */
  readonly rssSeries: number[];
}

/**
 * Load (the service must be SERVING first), BEFORE_MS; stats; kill -9 the
 * backend; NOT_SERVING; DOWN_MS after the kill, restart it; SERVING; load
 * AFTER_MS more. `onRestart` runs just before the restart.
 */
export const runFault = async (opts: {
  readonly mesh: Mesh;
  readonly service: string;
  readonly backend: Backend;
  readonly ops: ReadonlyArray<Op>;
  readonly workers: number;
  readonly onRestart?: (at: number) => void;
}): Promise<FaultRun & { readonly monitor: HealthMonitor }> => {
  const monitor = monitorHealth(opts.mesh.url, opts.service);
  await monitor.waitFor("SERVING before the load", 0, serving, 30_000);
  const load = startLoad(opts.ops, opts.workers);
  const rssSeries: number[] = [];
  const sampler = setInterval(() => {
    residentMiB(opts.mesh.pid).then(
      (rss) => rssSeries.push(rss),
      () => {},
    );
  }, 1_000);
  try {
    const loadStart = Date.now();
    await sleep(BEFORE_MS);
    const before = await opts.mesh.stats();

    const kill = Date.now();
    await opts.backend.kill();
    const down = await monitor.waitFor(
      "NOT_SERVING after the kill",
      kill,
      notServing,
      NOT_SERVING_WITHIN_MS,
    );
    await sleep(Math.max(0, kill + DOWN_MS - Date.now()));

    const restart = Date.now();
    opts.onRestart?.(restart);
    await opts.backend.start();
    const backendReady = Date.now();
    const up = await monitor.waitFor(
      "SERVING after the restart",
      restart,
      serving,
      SERVING_WITHIN_MS,
    );
    await sleep(AFTER_MS);
    await load.stop();
    const loadEnd = Date.now();
    return {
      monitor,
      timeline: {
        loadStart,
        kill,
        notServing: down.time,
        restart,
        backendReady,
        serving: up.time,
        loadEnd,
      },
      records: load.records,
      before,
      rssSeries,
    };
  } finally {
    clearInterval(sampler);
    await load.stop();
    await monitor.stop();
  }
};

const summary = (records: ReadonlyArray<CallRecord>) => {
  const counts: Record<string, number> = {};
  for (const r of records) {
    const key = `${r.op}:${r.code === undefined ? "OK" : Code[r.code]}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
};

const describeCall = (r: CallRecord, t0: number) =>
  `${r.op} at +${r.start - t0} ms took ${r.end - r.start} ms: ${r.code === undefined ? "OK" : `${Code[r.code]} ${r.message}`}`;

const quantile = (xs: ReadonlyArray<number>, q: number) =>
  xs.length === 0 ? 0 : ([...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))] ?? 0);

/**
 * The checks every backend passes, after printing the figures (as
 * `[faults:<backend>] {json}`; the README quotes them). `affected` names the
 * ops that go to the killed backend (the others must never fail). Call it
 * once the mesh has caught up (e.g. redelivered what the outage held back):
 * its memory and descriptors are compared with those before the kill then.
 */
export const checkFault = async (
  backend: string,
  run: FaultRun,
  mesh: Mesh,
  affected: ReadonlySet<string>,
) => {
  const { timeline: t, records } = run;
  // A moment without load first: V8 gives back the heap room a burst made it take.
  await sleep(SETTLE_MS);
  const after = await mesh.stats();
  const failed = (r: CallRecord) => r.code !== undefined;
  const tookMs = (r: CallRecord) => r.end - r.start;
  // Calls made while the backend was down and known to be (NOT_SERVING shown).
  const whileDown = records.filter((r) => r.start >= t.notServing && r.end <= t.restart);
  const downMs = whileDown.map(tookMs);
  report(backend, {
    calls: records.length,
    ok: records.filter((r) => !failed(r)).length,
    byOpAndCode: summary(records),
    notServingAfterKillMs: t.notServing - t.kill,
    backendRestartMs: t.backendReady - t.restart,
    servingAfterBackendReadyMs: t.serving - t.backendReady,
    servingAfterRestartMs: t.serving - t.restart,
    whileDown: {
      calls: whileDown.length,
      unavailable: whileDown.filter((r) => r.code === Code.Unavailable).length,
      p50Ms: quantile(downMs, 0.5),
      p99Ms: quantile(downMs, 0.99),
      maxMs: quantile(downMs, 1),
    },
    slowestCallMs: Math.max(0, ...records.map(tookMs)),
    afterGcMiB: {
      rss: { before: run.before.rssMiB, after: after.rssMiB },
      heap: { before: run.before.heapMiB, after: after.heapMiB },
      external: { before: run.before.externalMiB, after: after.externalMiB },
    },
    rssSeriesMiB: run.rssSeries.map(Math.round),
    fds: { before: run.before.fds, after: after.fds },
  });

  const show = (list: ReadonlyArray<CallRecord>) =>
    list
      .slice(0, 10)
      .map((r) => describeCall(r, t.loadStart))
      .join("\n");
  const none = (what: string, list: ReadonlyArray<CallRecord>) =>
    expect(list.length, `${what}:\n${show(list)}`).toBe(0);

  // The mesh stayed up, and logged no error (defects are logged at ERROR).
  expect(mesh.child.exitCode, `the mesh exited; stderr:\n${mesh.stderrTail()}`).toBeNull();
  expect(mesh.child.signalCode).toBeNull();
  expect(mesh.errorLines(), "error lines in the mesh's log").toEqual([]);

  // Every call ended by its deadline (plus scheduling slack): nothing hung.
  none(
    "calls past their deadline",
    records.filter((r) => tookMs(r) > DEADLINE_MS + DEADLINE_SLACK_MS),
  );
  // Before the kill, and once SERVING again, every call succeeded.
  none(
    "failures before the kill",
    records.filter((r) => r.end < t.kill && failed(r)),
  );
  none(
    "failures once SERVING again",
    records.filter((r) => r.start >= t.serving && failed(r)),
  );
  // Calls to services on other backends never failed.
  none(
    "failures of calls to other services",
    records.filter((r) => !affected.has(r.op) && failed(r)),
  );
  // Around the outage, failures are UNAVAILABLE, or DEADLINE_EXCEEDED only
  // when the deadline ended the call (calls in flight at the kill).
  none(
    "failures other than UNAVAILABLE",
    records.filter(
      (r) =>
        failed(r) &&
        !(
          r.code === Code.Unavailable ||
          (r.code === Code.DeadlineExceeded && tookMs(r) >= DEADLINE_MS - 50)
        ),
    ),
  );
  // Fail fast: while the backend is known down, its calls fail with
  // UNAVAILABLE well before their deadline, they do not wait for it.
  const affectedWhileDown = whileDown.filter((r) => affected.has(r.op));
  expect(affectedWhileDown.length, "calls while the backend was down").toBeGreaterThan(0);
  none(
    `calls to the dead backend not failing with UNAVAILABLE within ${FAIL_FAST_MS} ms`,
    affectedWhileDown.filter((r) => r.code !== Code.Unavailable || tookMs(r) > FAIL_FAST_MS),
  );

  // No leak: memory and descriptors after recovery close to before the kill.
  expect(after.rssMiB - run.before.rssMiB, "RSS growth (MiB, after a full GC)").toBeLessThan(
    RSS_GROWTH_LIMIT_MIB,
  );
  expect(after.heapMiB - run.before.heapMiB, "live heap growth (MiB)").toBeLessThan(
    HEAP_GROWTH_LIMIT_MIB,
  );
  expect(after.fds - run.before.fds, "open descriptors growth").toBeLessThanOrEqual(
    FD_GROWTH_LIMIT,
  );
};

/** Prints the figures (the README quotes them) as one line. */
export const report = (backend: string, figures: object) =>
  console.log(`[faults:${backend}] ${JSON.stringify(figures)}`);

/** Waits until `check` holds; fails after `ms` with `what`. */
export const until = async (what: string, check: () => Promise<boolean> | boolean, ms: number) => {
  const end = Date.now() + ms;
  for (;;) {
    if (await Promise.resolve(check()).catch(() => false)) return;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(200);
  }
};
