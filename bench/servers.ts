/**
 * The server processes the pairs measure: the mesh as `npm start` runs it, and
 * the bare connect-node baseline (bench/bare-server.ts). Each is its own
 * process, so the load generator never shares its event loop and /proc gives
 * its CPU and memory alone. test/support/process.ts spawns the mesh the same
 * way, but takes no Node flags; profiling needs `--cpu-prof`, which Node
 * refuses in NODE_OPTIONS.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { meshBuiltOnce } from "../scripts/build-mesh.js";

export interface Server {
  /** Where gRPC (h2c) goes. */
  readonly url: string;
  /** Where Connect over HTTP/1.1 goes (the mesh: the same port). */
  readonly http1Url: string;
  /** `host:port`, as ghz wants it. */
  readonly target: string;
  /** The mesh's native gRPC server (grpc-js), when it has one. */
  readonly grpcUrl?: string;
  readonly pid: number;
  /** SIGTERM, then SIGKILL if it has not exited after 15 s. */
  readonly stop: () => Promise<void>;
}

/** Servers not yet stopped, so bench/run.ts can stop them by PID if a pair throws. */
export const running = new Set<Server>();

const STOP_GRACE_MS = 15_000;

const spawnServer = async (
  name: string,
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  /** Runs once the process has exited, or failed to start. */
  cleanup: () => void = () => {},
): Promise<Server> => {
  const child = spawn(process.execPath, args, {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = once(child, "exit");
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  // Read to the end (a full pipe would block the server); only the first line matters.
  const started = new Promise<[string, string, string | undefined]>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const match = /listening on (http:\/\/[^\s,]+)/.exec(line);
      if (match?.[1])
        resolve([
          match[1],
          /HTTP\/1\.1 on (http:\/\/\S+)/.exec(line)?.[1] ?? match[1],
          /native gRPC on (http:\/\/[^\s"]+)/.exec(line)?.[1],
        ]);
    });
    void exited.then(([code]) =>
      reject(new Error(`${name} exited with ${code} before listening:\n${stderr}`)),
    );
  });
  const [url, http1Url, grpcUrl] = await started.catch((err: unknown) => {
    cleanup();
    throw err;
  });
  const pid = child.pid as number;
  const server: Server = {
    url,
    http1Url,
    target: new URL(url).host,
    ...(grpcUrl === undefined ? {} : { grpcUrl }),
    pid,
    stop: async () => {
      running.delete(server);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      cleanup();
    },
  };
  running.add(server);
  return server;
};

/**
 * The mesh with every service on its embedded backend unless `env` points it
 * at real ones. The web console is off: it is not on any measured path and
 * bundling it at start-up only costs CPU. With `profileDir`, V8 writes the
 * process's CPU profile there when it exits.
 */
export const startMesh = async (env: Record<string, string> = {}, profileDir?: string) => {
  const bundle = await meshBuiltOnce();
  const dataDir = mkdtempSync(join(tmpdir(), "fo-bench-"));
  return spawnServer(
    "mesh",
    [...(profileDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${profileDir}`]), bundle],
    { FO_PORT: "0", FO_DATA_DIR: dataDir, FO_CONSOLE: "false", ...env },
    () => rmSync(dataDir, { recursive: true, force: true }),
  );
};

/** The mesh as native gRPC clients see it: its grpc-js port instead of the one port. */
export const nativePort = (mesh: Server): Server => {
  if (mesh.grpcUrl === undefined) throw new Error("the mesh serves no native gRPC port");
  return { ...mesh, url: mesh.grpcUrl, target: new URL(mesh.grpcUrl).host };
};

/**
 * The native gRPC pairs' baseline (bench/bare-grpcjs.ts): grpc-js answering
 * Health/Check and MemoryManager Read, from Hazelcast when `env` names members.
 */
export const startBareGrpcJs = (env: Record<string, string> = {}) =>
  spawnServer("bare grpc-js server", ["--import", "tsx", "bench/bare-grpcjs.ts"], env);

/** The transport pair's baseline: connect-node, one Health/Check handler, nothing else. */
export const startBare = () =>
  spawnServer("bare connect-node server", ["--import", "tsx", "bench/bare-server.ts"], {});

/** The floor of a forwarding hop: bench/relay.ts, passing every call on to `upstream`. */
export const startRelay = (upstream: string) =>
  spawnServer("node:http2 relay", ["--import", "tsx", "bench/relay.ts"], {
    RELAY_UPSTREAM: upstream,
  });

/** An OTLP/HTTP endpoint in the bench process that accepts every export and drops it. */
export const startOtlpSink = async () => {
  let exports = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      exports++;
      res.writeHead(200, { "content-type": "application/x-protobuf" });
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** Export requests received so far. */
    exports: () => exports,
    close: () => server.close(),
  };
};
