// FerretDB (MongoDB wire protocol) on SQLite, built from source with Go.
import { cp, mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { MongoClient } from "mongodb";
import { type Backend, backendPaths, provisionOnce } from "./backend.js";
import { downloadModule, goEnv } from "./go.js";
import { cacheDir, capture, envPort, host, run, spawnDetached } from "./process.js";

export const FERRETDB_VERSION = "v1.24.2";
const MODULE = "github.com/FerretDB/FerretDB";

const paths = backendPaths("ferretdb");
const binary = join(cacheDir, "bin", "ferretdb");
const srcDir = join(paths.dir, "src");
const dataDir = join(paths.dir, "data");
const stateDir = join(paths.dir, "state");

async function provision(): Promise<void> {
  const opts = { logFile: paths.provisionLog, env: goEnv() };
  // `go install ...@v1.24.2` builds a binary that panics at startup: the
  // module zip lacks build/version/version.txt (generated from git at
  // release time). So fetch the module source, add that file, build it.
  const moduleDir = await downloadModule(MODULE, FERRETDB_VERSION, cacheDir, opts.env);
  await rm(srcDir, { recursive: true, force: true });
  // The module cache is read-only, and cp keeps modes: make the copy writable.
  await cp(moduleDir, srcDir, { recursive: true });
  await run("chmod", ["-R", "u+w", srcDir], { ...opts, timeoutMs: 60_000 });
  await writeFile(join(srcDir, "build", "version", "version.txt"), `${FERRETDB_VERSION}\n`);
  await mkdir(join(cacheDir, "bin"), { recursive: true });
  await run("go", ["build", "-trimpath", "-o", binary, "./cmd/ferretdb"], {
    ...opts,
    cwd: srcDir,
    timeoutMs: 20 * 60_000,
  });
  const version = await capture(binary, ["--version"]);
  if (!version.includes(`version: ${FERRETDB_VERSION}`)) {
    throw new Error(`built ferretdb reports an unexpected version:\n${version}`);
  }
  // The source copy is only needed for the build (Go's caches keep the rest).
  await rm(srcDir, { recursive: true, force: true });
}

/** The flags FerretDB runs with here: SQLite storage, and nothing listening or phoning home besides the wire protocol. */
export function ferretdbArgs(o: {
  listen: string;
  dataDir: string;
  stateDir: string;
  logLevel: "info" | "warn";
}): string[] {
  return [
    "--handler=sqlite",
    `--sqlite-url=file:${o.dataDir}/`,
    `--listen-addr=${o.listen}`,
    `--state-dir=${o.stateDir}`,
    // No debug/metrics HTTP listener at all, and no telemetry beacon.
    "--debug-addr=-",
    "--telemetry=disable",
    `--log-level=${o.logLevel}`,
  ];
}

export function ferretdb(): Backend {
  const port = envPort("INFRA_FERRETDB_PORT", 27017);
  return {
    name: "ferretdb",
    port,
    ...paths,
    cmdlineMarker: binary,
    readyTimeoutMs: 60_000,
    provision: (log) =>
      provisionOnce({ name: "ferretdb", ...paths }, FERRETDB_VERSION, log, provision),
    async start() {
      await mkdir(dataDir, { recursive: true });
      await mkdir(stateDir, { recursive: true });
      return spawnDetached(
        binary,
        ferretdbArgs({ listen: `${host}:${port}`, dataDir, stateDir, logLevel: "info" }),
        {
          cwd: paths.dir,
          env: { ...process.env, DO_NOT_TRACK: "1" },
          logFile: paths.logFile,
          pidFile: paths.pidFile,
        },
      );
    },
    async probe() {
      const client = new MongoClient(mongodbUri(port), {
        serverSelectionTimeoutMS: 2000,
        connectTimeoutMS: 2000,
      });
      try {
        const res = await client.db("admin").command({ ping: 1 });
        return res.ok === 1;
      } finally {
        await client.close();
      }
    },
  };
}

export function mongodbUri(port: number): string {
  // directConnection: a single standalone server, never discover others.
  return `mongodb://${host}:${port}/?directConnection=true`;
}
