// Prometheus and promtool from the Debian package, unpacked into the cache
// with `dpkg -x` (never installed: no service, no user, no root needed once
// the package lists exist). Nothing runs by default: tests start their own
// short-lived server with `startPrometheus`, scraping what they point it at.
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { provisionOnce } from "./backend.js";
import {
  appendLine,
  backendError,
  cacheDir,
  capture,
  host,
  isAlive,
  type Log,
  livePid,
  run,
  stopPid,
  tail,
  waitUntil,
  withLock,
} from "./process.js";

const dir = join(cacheDir, "prometheus");
const provisionLog = join(dir, "provision.log");
const debDir = join(dir, "deb");
const rootDir = join(dir, "root");
const instancesDir = join(dir, "instances");

export type PrometheusBinaries = { prometheus: string; promtool: string };

/** Where the binaries are (or will be, once provisioned). */
export function prometheusBinaries(): PrometheusBinaries {
  return {
    prometheus: join(rootDir, "usr", "bin", "prometheus"),
    promtool: join(rootDir, "usr", "bin", "promtool"),
  };
}

// `prometheus` or e.g. `prometheus=2.42.0+ds-5+deb12u1`. The package's
// Depends are for the web UI's JavaScript and the system service; the two
// binaries themselves only need libc.
const debSpec = () => process.env.INFRA_PROMETHEUS_DEB ?? "prometheus";

async function provision(): Promise<void> {
  const opts = { logFile: provisionLog, timeoutMs: 10 * 60_000 };
  await rm(debDir, { recursive: true, force: true });
  await rm(rootDir, { recursive: true, force: true });
  await mkdir(debDir, { recursive: true });
  try {
    // As root, apt would otherwise try (and warn about) its _apt sandbox user,
    // which cannot write into the cache.
    await run("apt-get", ["download", "-o", "APT::Sandbox::User=root", debSpec()], {
      ...opts,
      cwd: debDir,
    });
  } catch (err) {
    throw new Error(
      `${(err as Error).message}; needs apt-get with package lists that know ${debSpec()} ` +
        "(run `apt-get update` as root if they are missing or stale)",
    );
  }
  const debs = (await readdir(debDir)).filter((f) => f.endsWith(".deb"));
  if (debs.length !== 1)
    throw new Error(`expected one .deb in ${debDir}, found: ${debs.join(", ")}`);
  const deb = join(debDir, debs[0] as string);
  await run("dpkg", ["-x", deb, rootDir], opts);
  const bins = prometheusBinaries();
  for (const bin of [bins.prometheus, bins.promtool]) {
    const version = await capture(bin, ["--version"]);
    await appendLine(provisionLog, version.split("\n")[0] ?? version);
  }
  await rm(debDir, { recursive: true, force: true });
}

let provisioned: Promise<PrometheusBinaries> | undefined;

/**
 * Downloads and unpacks the Debian package into `.cache/infra/prometheus`
 * unless already there (cached across runs; concurrent callers in other
 * processes wait on a lock). Returns the binaries' paths.
 */
export function provisionPrometheus(opts: { log?: Log } = {}): Promise<PrometheusBinaries> {
  provisioned ??= withLock("prometheus-provision", 15 * 60_000, async () => {
    await provisionOnce(
      { name: "prometheus", dir, provisionLog },
      `apt:${debSpec()}`,
      opts.log ?? (() => {}),
      provision,
    );
    const bins = prometheusBinaries();
    for (const bin of [bins.prometheus, bins.promtool]) {
      if (!existsSync(bin)) throw new Error(`${bin} is missing; remove ${dir} to re-provision`);
    }
    return bins;
  }).catch((err: unknown) => {
    provisioned = undefined;
    throw backendError(
      "prometheus",
      `provisioning failed: ${(err as Error).message}`,
      provisionLog,
    );
  });
  return provisioned;
}

export type PrometheusOptions = {
  /** `host:port` serving the exposition text, e.g. "127.0.0.1:8080". */
  scrapeTarget: string;
  /** Default 1000. Also the scrape timeout. */
  scrapeIntervalMs?: number;
  /** Default "/metrics". */
  metricsPath?: string;
  /** The `job` label. Default "mesh". */
  jobName?: string;
  /** Default 30 s. */
  readyTimeoutMs?: number;
};

export type PrometheusServer = {
  /** Base URL, e.g. `${url}/api/v1/query?query=up`. */
  url: string;
  port: number;
  pid: number;
  /** Config, TSDB, log and pid file of this instance (removed by `stop`). */
  dir: string;
  logFile: string;
  /** SIGTERM (SIGKILL after 10 s) by PID, then removes `dir`. Idempotent. */
  stop(): Promise<void>;
};

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === "object") resolve(address.port);
        else reject(new Error("no port"));
      });
    });
  });
}

function scrapeConfig(o: Required<Omit<PrometheusOptions, "readyTimeoutMs">>): string {
  const every = `${o.scrapeIntervalMs}ms`;
  return `# Generated by test/infra/prometheus.ts.
global:
  scrape_interval: ${every}
  scrape_timeout: ${every}
  evaluation_interval: ${every}
scrape_configs:
  - job_name: ${JSON.stringify(o.jobName)}
    metrics_path: ${JSON.stringify(o.metricsPath)}
    static_configs:
      - targets: [${JSON.stringify(o.scrapeTarget)}]
`;
}

/**
 * Starts a Prometheus on a free 127.0.0.1 port that scrapes `scrapeTarget`,
 * with its TSDB in a fresh directory under `.cache/infra/prometheus/instances`
 * (so `infra:down` can find and stop a leftover one), and waits for
 * `/-/ready`. The caller must `stop()` it.
 */
export async function startPrometheus(options: PrometheusOptions): Promise<PrometheusServer> {
  const o = {
    scrapeIntervalMs: 1000,
    metricsPath: "/metrics",
    jobName: "mesh",
    ...options,
  };
  if (!/^[^\s/]+:\d+$/.test(o.scrapeTarget)) {
    throw new Error(`scrapeTarget must be host:port, got ${o.scrapeTarget}`);
  }
  if (!Number.isInteger(o.scrapeIntervalMs) || o.scrapeIntervalMs <= 0) {
    throw new Error(`scrapeIntervalMs must be a positive integer, got ${o.scrapeIntervalMs}`);
  }
  const { prometheus } = await provisionPrometheus();
  await mkdir(instancesDir, { recursive: true });
  await removeDeadInstances();
  const instanceDir = await mkdtemp(join(instancesDir, "run-"));
  const configFile = join(instanceDir, "prometheus.yml");
  const logFile = join(instanceDir, "server.log");
  await writeFile(configFile, scrapeConfig(o));

  // The free port may be taken between probing and binding: retry then.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const proc = track(await spawnPrometheus(prometheus, instanceDir, configFile, port, logFile));
    const url = `http://${host}:${port}`;
    let stopped: Promise<void> | undefined;
    const stop = () => {
      stopped ??= proc.kill().then(() => rm(instanceDir, { recursive: true, force: true }));
      return stopped;
    };
    try {
      await waitUntil(
        async () => (await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(2000) })).ok,
        {
          timeoutMs: o.readyTimeoutMs ?? 30_000,
          intervalMs: 200,
          abort: () =>
            isAlive(proc.pid) ? undefined : `process ${proc.pid} exited during startup`,
        },
      );
      return { url, port, pid: proc.pid, dir: instanceDir, logFile, stop };
    } catch (err) {
      if (attempt < 3 && tail(logFile).includes("address already in use")) {
        await proc.kill();
        continue;
      }
      const error = backendError(
        "prometheus",
        `failed to start: ${(err as Error).message}`,
        logFile,
      );
      await stop();
      throw error;
    }
  }
}

async function spawnPrometheus(
  bin: string,
  instanceDir: string,
  configFile: string,
  port: number,
  logFile: string,
): Promise<number> {
  const consoles = join(rootDir, "etc", "prometheus");
  const args = [
    `--config.file=${configFile}`,
    `--web.listen-address=${host}:${port}`,
    `--storage.tsdb.path=${join(instanceDir, "data")}`,
    `--web.console.templates=${join(consoles, "consoles")}`,
    `--web.console.libraries=${join(consoles, "console_libraries")}`,
    "--log.level=info",
  ];
  await appendLine(logFile, `$ ${bin} ${args.join(" ")}`);
  const fd = openSync(logFile, "a");
  try {
    // Not detached: a Ctrl-C of the test run reaches it too. `unref` so a
    // forgotten `stop` cannot keep the test process alive (see exit hook).
    const child = spawn(bin, args, { cwd: instanceDir, stdio: ["ignore", fd, fd] });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once("error", (err) => reject(new Error(`cannot start ${bin}: ${err.message}`)));
      child.once("spawn", () => {
        if (child.pid === undefined) reject(new Error(`cannot start ${bin}: no pid`));
        else resolve(child.pid);
      });
    });
    child.unref();
    await writeFile(join(instanceDir, "prometheus.pid"), `${pid}\n`);
    return pid;
  } finally {
    closeSync(fd);
  }
}

/** Stops `pid` on demand, or (safety net for a missing `stop()`) when this process exits. */
function track(pid: number): { pid: number; kill(): Promise<void> } {
  const onExit = () => {
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      // already gone
    }
  };
  process.once("exit", onExit);
  return {
    pid,
    async kill() {
      process.off("exit", onExit);
      if (isAlive(pid)) await stopPid(pid, 10_000);
    },
  };
}

/**
 * Removes the directories of instances whose process is gone (the exit hook
 * stops a server but cannot delete its files). Young ones are left alone:
 * another process may be just starting one.
 */
async function removeDeadInstances(): Promise<void> {
  const entries = await readdir(instancesDir).catch(() => [] as string[]);
  await Promise.all(
    entries.map(async (name) => {
      const instanceDir = join(instancesDir, name);
      const age =
        Date.now() -
        (await stat(instanceDir).then(
          (s) => s.mtimeMs,
          () => Date.now(),
        ));
      if (age < 60_000) return;
      const pid = await livePid(join(instanceDir, "prometheus.pid"), instanceDir);
      if (pid === undefined) await rm(instanceDir, { recursive: true, force: true });
    }),
  );
}

/** Stops (by PID) and removes instances left behind by crashed test runs. */
export async function stopPrometheusInstances(log: Log): Promise<void> {
  const entries = await readdir(instancesDir).catch(() => [] as string[]);
  await Promise.all(
    entries.map(async (name) => {
      const instanceDir = join(instancesDir, name);
      const pid = await livePid(join(instanceDir, "prometheus.pid"), instanceDir);
      if (pid !== undefined) {
        const how = await stopPid(pid, 10_000);
        log(`[infra:prometheus] stopped leftover pid ${pid}${how === "kill" ? " (SIGKILL)" : ""}`);
      }
      await rm(instanceDir, { recursive: true, force: true });
    }),
  );
}

/** Whether the binaries are provisioned, and how many test instances run. */
export async function prometheusStatus(): Promise<{ provisioned: boolean; running: number[] }> {
  const bins = prometheusBinaries();
  const entries = await readdir(instancesDir).catch(() => [] as string[]);
  const pids = await Promise.all(
    entries.map((name) =>
      livePid(join(instancesDir, name, "prometheus.pid"), join(instancesDir, name)),
    ),
  );
  return {
    provisioned: existsSync(join(dir, "provisioned.txt")) && existsSync(bins.prometheus),
    running: pids.filter((p): p is number => p !== undefined),
  };
}
