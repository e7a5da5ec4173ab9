/**
 * A FerretDB server of a test's own (the shared one must stay up for the
 * others): the binary the shared provisioning built (test/infra/ferretdb.ts),
 * the same flags (SQLite handler, loopback, no debug listener, telemetry
 * off), a port of its own and a data directory that outlives the process, so
 * it can be killed (SIGKILL, by its PID) and started again on the same data.
 * Released with its scope (killed, directory removed).
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect } from "effect";
import { MongoClient } from "mongodb";
import { ferretdbArgs, mongodbUri } from "../infra/ferretdb.js";
import { cacheDir } from "../infra/index.js";
import { freePort, host } from "../infra/process.js";
import { killableServer } from "./killable.js";

/** Built by `npm run infra:up` (or the integration/faults global setup). */
const binary = join(cacheDir, "bin", "ferretdb");

export interface PrivateFerretDb {
  /** `mongodb://127.0.0.1:<port>/?directConnection=true`. */
  readonly uri: string;
  readonly port: number;
  /** Temporary directory: `data/` (SQLite files), `state/`, `server.log`. */
  readonly dir: string;
  readonly logFile: string;
  /** PID of the running server, if any. */
  readonly pid: () => number | undefined;
  /** Starts the server on the kept data; resolves once it answers a ping (fails with its log tail). */
  readonly start: () => Promise<void>;
  /** SIGKILL by PID; resolves once it exited. */
  readonly kill: () => Promise<void>;
}

const ping = async (uri: string) => {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 1_000, connectTimeoutMS: 1_000 });
  try {
    return (await client.db("admin").command({ ping: 1 })).ok === 1;
  } finally {
    await client.close();
  }
};

export const privateFerretDb = Effect.acquireRelease(
  Effect.promise(async (): Promise<PrivateFerretDb> => {
    if (!existsSync(binary)) {
      throw new Error(
        `[ferretdb-server] ${binary} is missing: run \`npm run infra:up\` (or the faults/integration tier, whose global setup provisions it)`,
      );
    }
    const dir = await mkdtemp(join(tmpdir(), "fo-ferretdb-"));
    const [dataDir, stateDir, logFile] = [
      join(dir, "data"),
      join(dir, "state"),
      join(dir, "server.log"),
    ];
    await mkdir(dataDir, { recursive: true });
    await mkdir(stateDir, { recursive: true });
    const port = await freePort();
    const uri = mongodbUri(port);
    const server = killableServer({
      name: "ferretdb (private)",
      command: binary,
      args: ferretdbArgs({ listen: `${host}:${port}`, dataDir, stateDir, logLevel: "warn" }),
      cwd: dir,
      env: { ...process.env, DO_NOT_TRACK: "1" },
      logFile,
      ready: () => ping(uri),
      timeoutMs: 30_000,
      intervalMs: 100,
    });

    return { uri, port, dir, logFile, ...server };
  }),
  (server) =>
    Effect.promise(async () => {
      await server.kill();
      await rm(server.dir, { recursive: true, force: true });
    }),
);
