// The contract each backend module (ferretdb.ts, kafka.ts, hazelcast.ts, jaeger.ts)
// implements, plus the "provisioned for this pin" marker files.
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { appendLine, cacheDir, type Log } from "./process.js";

export type BackendName = "ferretdb" | "kafka" | "hazelcast" | "jaeger";

export interface Backend {
  readonly name: BackendName;
  /** Client-facing port on 127.0.0.1. */
  readonly port: number;
  /** `<cache>/<name>`: config, data, pid file and logs of this backend. */
  readonly dir: string;
  /** Server stdout/stderr. */
  readonly logFile: string;
  /** Output of go/mvn/format steps. */
  readonly provisionLog: string;
  readonly pidFile: string;
  /** A substring of the server's command line, to tell our PID from a reused one. */
  readonly cmdlineMarker: string;
  /** How long a freshly started server may take to pass `probe`. */
  readonly readyTimeoutMs: number;
  /** Downloads/builds whatever is missing for the pinned version (no-op when cached). */
  provision(log: Log): Promise<void>;
  /** Writes config, prepares data dirs and spawns the server detached; returns its PID. */
  start(log: Log): Promise<number>;
  /** One readiness check through the real client driver; must not hang. */
  probe(): Promise<boolean>;
}

export function backendPaths(name: BackendName) {
  const dir = join(cacheDir, name);
  return {
    dir,
    logFile: join(dir, "server.log"),
    provisionLog: join(dir, "provision.log"),
    pidFile: join(dir, "server.pid"),
  };
}

/**
 * Runs `provision` unless `<dir>/provisioned.txt` records exactly `pin`.
 * Changing a pinned version (or anything else folded into `pin`) therefore
 * re-provisions on the next `up`.
 */
export async function provisionOnce(
  // `name` is a string: tools that are provisioned but not run (prometheus.ts) use this too.
  backend: { name: string; dir: string; provisionLog: string },
  pin: string,
  log: Log,
  provision: () => Promise<void>,
): Promise<void> {
  const marker = join(backend.dir, "provisioned.txt");
  if (existsSync(marker) && (await readFile(marker, "utf8")).trim() === pin) return;
  await mkdir(backend.dir, { recursive: true });
  const started = Date.now();
  log(`[infra:${backend.name}] provisioning ${pin} (log: ${backend.provisionLog})`);
  await appendLine(backend.provisionLog, `provisioning ${pin}`);
  await provision();
  await writeFile(marker, `${pin}\n`);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  log(`[infra:${backend.name}] provisioned ${pin} in ${secs}s`);
  await appendLine(backend.provisionLog, `provisioned ${pin} in ${secs}s`);
}
