// Real-backend launcher for integration tests: FerretDB (MongoDB protocol),
// Kafka (KRaft), Hazelcast and Jaeger, provisioned into .cache/infra/ and run
// as detached local processes on 127.0.0.1, plus the Prometheus binaries
// (provisioned only; tests start their own). See cli.ts and global-setup.ts.
import type { Backend, BackendName } from "./backend.js";
import { ferretdb, mongodbUri } from "./ferretdb.js";
import { hazelcast } from "./hazelcast.js";
import { type JaegerAddresses, jaeger, jaegerAddresses } from "./jaeger.js";
import { kafka } from "./kafka.js";
import {
  appendLine,
  backendError,
  host,
  isAlive,
  type Log,
  livePid,
  portInUse,
  stopPid,
  waitUntil,
  withLock,
} from "./process.js";
import { prometheusBinaries, provisionPrometheus, stopPrometheusInstances } from "./prometheus.js";

export type { BackendName } from "./backend.js";
export { cacheDir } from "./process.js";
// Prometheus is provisioned by `up` but never run by it: tests start their own.
export { prometheusStatus, startPrometheus } from "./prometheus.js";

export type InfraAddresses = {
  mongodbUri: string;
  kafkaBrokers: string[];
  hazelcastMembers: string[];
  jaeger: JaegerAddresses;
  /** Binaries only: start a server with `startPrometheus` (test/infra/prometheus.ts). */
  prometheus: { bin: string; promtool: string };
};

export type BackendStatus = {
  name: BackendName;
  running: boolean;
  pid: number | undefined;
  port: number;
  ready: boolean;
  logFile: string;
};

declare module "vitest" {
  export interface ProvidedContext {
    infra: InfraAddresses;
  }
}

// A first `up` on a fresh machine may spend minutes in go build + mvn;
// anyone else calling `up` meanwhile waits for it rather than racing it.
const LOCK_TIMEOUT_MS = 30 * 60_000;
const STOP_GRACE_MS = 30_000;

function backends(): Backend[] {
  return [ferretdb(), kafka(), hazelcast(), jaeger()];
}

function addresses(list: Backend[]): InfraAddresses {
  const port = (name: BackendName) => {
    const b = list.find((x) => x.name === name);
    if (b === undefined) throw new Error(`unknown backend ${name}`);
    return b.port;
  };
  const bins = prometheusBinaries();
  return {
    mongodbUri: mongodbUri(port("ferretdb")),
    kafkaBrokers: [`${host}:${port("kafka")}`],
    hazelcastMembers: [`${host}:${port("hazelcast")}`],
    // Jaeger listens on four ports; its Backend's `port` is the query one.
    jaeger: jaegerAddresses(),
    prometheus: { bin: bins.prometheus, promtool: bins.promtool },
  };
}

/**
 * Makes one backend running and ready. Returns true if this call started it,
 * false if a running instance (pid file + readiness) was reused.
 */
async function ensureUp(b: Backend, log: Log): Promise<boolean> {
  const existing = await livePid(b.pidFile, b.cmdlineMarker);
  if (existing !== undefined) {
    try {
      // It may still be starting (e.g. after a crash of the previous `up`).
      await waitUntil(() => b.probe(), {
        timeoutMs: b.readyTimeoutMs,
        abort: () => (isAlive(existing) ? undefined : `pid ${existing} exited`),
      });
    } catch (err) {
      throw backendError(
        b.name,
        `already running as pid ${existing} but not ready: ${(err as Error).message}`,
        b.logFile,
      );
    }
    log(`[infra:${b.name}] reusing running instance (pid ${existing}, port ${b.port})`);
    return false;
  }

  // Never mistake somebody else's server for ours, nor fail obscurely on bind.
  // (No log tail here: the log is from an earlier run and would mislead.)
  if (await portInUse(b.port)) {
    throw new Error(
      `[infra:${b.name}] port ${host}:${b.port} is already in use by a process this launcher ` +
        "did not start (see `ss -ltnp`); stop it or override the port via env",
    );
  }

  try {
    await b.provision(log);
  } catch (err) {
    throw backendError(b.name, `provisioning failed: ${(err as Error).message}`, b.provisionLog);
  }

  const started = Date.now();
  let pid: number;
  try {
    pid = await b.start(log);
  } catch (err) {
    throw backendError(b.name, `failed to start: ${(err as Error).message}`, b.provisionLog);
  }
  log(`[infra:${b.name}] started pid ${pid}, waiting for readiness on port ${b.port}`);
  try {
    await waitUntil(() => b.probe(), {
      timeoutMs: b.readyTimeoutMs,
      abort: () => (isAlive(pid) ? undefined : `process ${pid} exited during startup`),
    });
  } catch (err) {
    // Don't leave a half-started server behind.
    if (isAlive(pid)) await stopPid(pid, 5_000);
    throw backendError(b.name, `failed to become ready: ${(err as Error).message}`, b.logFile);
  }
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  await appendLine(b.logFile, `[infra] ready after ${secs}s`);
  log(`[infra:${b.name}] ready after ${secs}s`);
  return true;
}

export type UpResult = { addresses: InfraAddresses; started: BackendName[] };

/** Like `up`, but also reports which backends this call started (vs reused). */
export async function upDetailed(opts: { log?: Log } = {}): Promise<UpResult> {
  const log = opts.log ?? (() => {});
  const list = backends();
  return withLock("infra", LOCK_TIMEOUT_MS, async () => {
    // All in parallel: go builds, mvn and apt overlap, JVMs boot together.
    const [results, prometheus] = await Promise.all([
      Promise.allSettled(list.map((b) => ensureUp(b, log))),
      Promise.allSettled([provisionPrometheus({ log })]),
    ]);
    const failures = [...results, ...prometheus].flatMap((r) =>
      r.status === "rejected" ? [r.reason as Error] : [],
    );
    const started = list.filter((_, i) => {
      const r = results[i];
      return r?.status === "fulfilled" && r.value;
    });
    if (failures.length > 0) {
      // All or nothing: don't leave the healthy ones we just started behind.
      await Promise.all(started.map((b) => stopBackend(b, log)));
      throw new Error(failures.map((e) => e.message).join("\n\n"));
    }
    return { addresses: addresses(list), started: started.map((b) => b.name) };
  });
}

/**
 * Provisions (if not cached) and starts FerretDB, Kafka, Hazelcast and
 * Jaeger, or reuses instances that are already running, and provisions the
 * Prometheus binaries. Resolves once all are ready; on failure rejects with
 * the backend's name and the tail of its log.
 */
export async function up(opts: { log?: Log } = {}): Promise<InfraAddresses> {
  return (await upDetailed(opts)).addresses;
}

/**
 * Stops backends started by this launcher, by the PIDs in their pid files
 * (SIGTERM, then SIGKILL after a grace period). `only` limits it to some;
 * without it, Prometheus servers that tests left behind are stopped too.
 */
export async function down(opts: { only?: BackendName[]; log?: Log } = {}): Promise<void> {
  const log = opts.log ?? (() => {});
  const list = backends().filter((b) => opts.only === undefined || opts.only.includes(b.name));
  await withLock("infra", LOCK_TIMEOUT_MS, async () => {
    await Promise.all([
      ...list.map((b) => stopBackend(b, log)),
      ...(opts.only === undefined ? [stopPrometheusInstances(log)] : []),
    ]);
  });
}

async function stopBackend(b: Backend, log: Log): Promise<void> {
  const pid = await livePid(b.pidFile, b.cmdlineMarker);
  if (pid === undefined) {
    log(`[infra:${b.name}] not running`);
    return;
  }
  const how = await stopPid(pid, STOP_GRACE_MS);
  await appendLine(b.logFile, `[infra] stopped pid ${pid} (${how})`);
  // livePid removes the now-stale pid file.
  await livePid(b.pidFile, b.cmdlineMarker);
  log(`[infra:${b.name}] stopped pid ${pid}${how === "kill" ? " (SIGKILL)" : ""}`);
}

/** Per backend: is our process alive, its PID and port, and does it answer. */
export async function status(): Promise<BackendStatus[]> {
  return Promise.all(
    backends().map(async (b) => {
      const pid = await livePid(b.pidFile, b.cmdlineMarker);
      const ready = pid !== undefined && (await b.probe().catch(() => false));
      return {
        name: b.name,
        running: pid !== undefined,
        pid,
        port: b.port,
        ready,
        logFile: b.logFile,
      };
    }),
  );
}

/** The addresses `up` would return, without starting anything. */
export function infraAddresses(): InfraAddresses {
  return addresses(backends());
}
