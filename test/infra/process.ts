// Shared helpers for the test-infra launcher: cache paths, child processes
// (logged provisioning steps and detached servers), pid files, waiting.
// Everything here identifies processes by PID, never by name.
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createConnection, createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root (this file lives in test/infra/). */
export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/** Git-ignored cache holding toolchains, data, pid files and logs. */
export const cacheDir = join(repoRoot, ".cache", "infra");

export const host = "127.0.0.1";

export type Log = (line: string) => void;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Port from an env override, else the default. */
export function envPort(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const port = Number(raw);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new Error(`${name}=${raw} is not a valid TCP port`);
  }
  return port;
}

/** Last `n` lines of a file, or a note that it does not exist. */
export function tail(file: string, n = 40): string {
  if (!existsSync(file)) return `(no log at ${file})`;
  const lines = readFileSync(file, "utf8").trimEnd().split("\n");
  return lines.slice(-n).join("\n");
}

/** An error naming the backend and carrying the tail of its log. */
export function backendError(backend: string, what: string, logFile: string): Error {
  return new Error(
    `[infra:${backend}] ${what}\n--- last 40 lines of ${logFile} ---\n${tail(logFile)}\n--- end of log ---`,
  );
}

type RunOptions = {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  logFile: string;
  timeoutMs: number;
};

/**
 * Runs a provisioning command to completion, appending its output to
 * `logFile`. Rejects on non-zero exit or timeout (the child is then killed
 * by its PID).
 */
export async function run(cmd: string, args: string[], opts: RunOptions): Promise<void> {
  await appendLine(opts.logFile, `$ ${cmd} ${args.join(" ")}`);
  const fd = openSync(opts.logFile, "a");
  try {
    await new Promise<void>((resolve, reject) => {
      const child = spawn(cmd, args, {
        cwd: opts.cwd,
        env: opts.env ?? process.env,
        stdio: ["ignore", fd, fd],
      });
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`${cmd} timed out after ${opts.timeoutMs / 1000}s`));
      }, opts.timeoutMs);
      child.on("error", (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot run ${cmd}: ${err.message}`));
      });
      child.on("exit", (code, signal) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(new Error(`${cmd} ${args[0] ?? ""} exited with ${signal ?? `code ${code}`}`));
      });
    });
  } finally {
    closeSync(fd);
  }
}

/** Runs a command and returns its stdout+stderr (for short probes like `java -version`). */
export function capture(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("error", (err) => reject(new Error(`cannot run ${cmd}: ${err.message}`)));
    // "close", not "exit": the process may exit before its output is read to the end, and
    // `go mod download -json` then parsed as empty now and then.
    child.on("close", (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with code ${code}: ${out}`)),
    );
  });
}

export async function appendLine(file: string, line: string): Promise<void> {
  await writeFile(file, `[${new Date().toISOString()}] ${line}\n`, { flag: "a" });
}

type DetachedOptions = {
  cwd: string;
  env?: NodeJS.ProcessEnv;
  logFile: string;
  pidFile: string;
};

/**
 * Starts a long-running server that outlives this Node process: its own
 * process group (`detached`), stdout/stderr straight into the log file, and
 * `unref()` so `infra:up` can exit while the server keeps running. The
 * previous run's log is kept as `<log>.prev` for post-mortems.
 */
export async function spawnDetached(
  cmd: string,
  args: string[],
  opts: DetachedOptions,
): Promise<number> {
  if (existsSync(opts.logFile)) await rename(opts.logFile, `${opts.logFile}.prev`);
  await appendLine(opts.logFile, `$ ${cmd} ${args.join(" ")}`);
  const fd = openSync(opts.logFile, "a");
  try {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      detached: true,
      stdio: ["ignore", fd, fd],
    });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once("error", (err) => reject(new Error(`cannot start ${cmd}: ${err.message}`)));
      child.once("spawn", () => {
        if (child.pid === undefined) reject(new Error(`cannot start ${cmd}: no pid`));
        else resolve(child.pid);
      });
    });
    child.unref();
    await writeFile(opts.pidFile, `${pid}\n`);
    return pid;
  } finally {
    closeSync(fd);
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM means the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  // A zombie (exited, not yet reaped by its parent) still answers signal 0.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return true; // no procfs: trust kill(0)
  }
}

/**
 * Guards against PID reuse: a recorded PID only counts as ours if the live
 * process's command line mentions `marker` (a path inside the cache dir).
 */
function isOurs(pid: number, marker: string): boolean {
  if (!isAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(marker);
  } catch {
    return true; // no procfs (non-Linux): trust the pid file
  }
}

/** PID from the pid file if that process is alive and ours; stale files are removed. */
export async function livePid(pidFile: string, marker: string): Promise<number | undefined> {
  let pid: number;
  try {
    pid = Number.parseInt(await readFile(pidFile, "utf8"), 10);
  } catch {
    return undefined;
  }
  if (Number.isInteger(pid) && pid > 0 && isOurs(pid, marker)) return pid;
  await rm(pidFile, { force: true });
  return undefined;
}

/** SIGTERM, wait up to `graceMs`, then SIGKILL. Only ever the given PID. */
export async function stopPid(pid: number, graceMs: number): Promise<"term" | "kill"> {
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return "term";
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return "term";
    await sleep(200);
  }
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
  while (isAlive(pid)) await sleep(100);
  return "kill";
}

/** True when something accepts TCP connections on host:port. */
/** A port nothing listens on right now, on loopback. */
export function freePort(): Promise<number> {
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

export function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    socket.setTimeout(1000);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * Polls `probe` until it returns true. Fails early via `abort` (e.g. the
 * server process died), or with a timeout.
 */
export async function waitUntil(
  probe: () => Promise<boolean>,
  opts: { timeoutMs: number; intervalMs?: number; abort?: () => string | undefined },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const reason = opts.abort?.();
    if (reason !== undefined) throw new Error(reason);
    if (await probe().catch(() => false)) return;
    if (Date.now() >= deadline) {
      throw new Error(`not ready within ${Math.round(opts.timeoutMs / 1000)}s`);
    }
    await sleep(opts.intervalMs ?? 500);
  }
}

/** Races a promise against a timeout (probes must never hang). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms}ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Cross-process mutex (an atomic `mkdir`) so that concurrent `up`/`down`
 * calls (a CLI and a test run, two vitest projects) never provision or
 * start the same backend twice. A lock left by a dead process is taken over.
 */
export async function withLock<T>(name: string, timeoutMs: number, fn: () => Promise<T>) {
  const dir = join(cacheDir, `${name}.lock`);
  const owner = join(dir, "pid");
  await mkdir(cacheDir, { recursive: true });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await mkdir(dir);
      await writeFile(owner, `${process.pid}\n`);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const holder = Number.parseInt(await readFile(owner, "utf8").catch(() => ""), 10);
      // Without a pid the holder is between mkdir and writeFile, or died
      // right there: only an old pid-less lock counts as abandoned.
      const lockedAt = await stat(dir).then(
        (s) => s.mtimeMs,
        () => 0,
      );
      const abandoned = Number.isInteger(holder)
        ? !isAlive(holder)
        : Date.now() - lockedAt > 10_000;
      if (abandoned) {
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() >= deadline) {
        throw new Error(`timed out waiting for ${dir} (held by pid ${holder})`);
      }
      await sleep(500);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
