/**
 * A server process of a test's own, for the fault tests: started (output
 * appended to its log file, ready once `ready()` says so, or failing with the
 * log's tail), killed with SIGKILL by its PID, and started again.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { appendLine, backendError, waitUntil } from "../infra/process.js";

export interface KillableServer {
  /** PID of the running server, if any. */
  readonly pid: () => number | undefined;
  /** Starts the server; resolves once it is ready (fails with its log tail). */
  readonly start: () => Promise<void>;
  /** SIGKILL by PID; resolves once it exited. */
  readonly kill: () => Promise<void>;
}

export const killableServer = (o: {
  /** For errors, e.g. "ferretdb (private)". */
  readonly name: string;
  readonly command: string;
  readonly args: ReadonlyArray<string>;
  readonly cwd: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly logFile: string;
  readonly ready: () => Promise<boolean>;
  readonly timeoutMs: number;
  readonly intervalMs: number;
}): KillableServer => {
  let child: ChildProcess | undefined;

  const kill = async () => {
    const current = child;
    child = undefined;
    if (current?.pid === undefined || current.exitCode !== null || current.signalCode !== null)
      return;
    const exited = new Promise((resolve) => current.once("exit", resolve));
    process.kill(current.pid, "SIGKILL");
    await exited;
    await appendLine(o.logFile, `[test] killed pid ${current.pid} (SIGKILL)`);
  };

  const start = async () => {
    await appendLine(o.logFile, `$ ${o.command} ${o.args.join(" ")}`);
    const fd = openSync(o.logFile, "a");
    try {
      const started = spawn(o.command, o.args, {
        cwd: o.cwd,
        env: o.env ?? process.env,
        stdio: ["ignore", fd, fd],
      });
      child = started;
      await waitUntil(o.ready, {
        timeoutMs: o.timeoutMs,
        intervalMs: o.intervalMs,
        abort: () =>
          started.exitCode === null && started.signalCode === null
            ? undefined
            : `exited with ${started.signalCode ?? `code ${started.exitCode}`}`,
      });
    } catch (e) {
      await kill();
      throw backendError(o.name, `cannot start: ${(e as Error).message}`, o.logFile);
    } finally {
      closeSync(fd);
    }
  };

  return { pid: () => child?.pid, start, kill };
};
