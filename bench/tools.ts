/**
 * The load generators, each wrapped as a `Side` of a pair:
 *
 * - gRPC: `h2load` (nghttp2, C) for throughput at a fixed number of concurrent
 *   streams, because on two shared cores a generator's own CPU is taken from
 *   the server it loads and h2load needs far less of it than ghz; `ghz` for
 *   latency at a fixed rate (`--rps --async`: open loop), because it speaks
 *   gRPC (checks every call's grpc-status) and h2load only sees HTTP 200.
 * - Connect over HTTP/1.1: `h2load --h1` for throughput, pinned as for gRPC
 *   (C, so it takes little CPU from the server; a call counts when answered
 *   200); `autocannon` at a fixed rate (`overallRate`) for latency, run in
 *   the bench process; latencies are taken from its per-response events,
 *   since its histogram keeps whole milliseconds only.
 * - Driver-call pairs: the in-process Node load of bench/harness.ts.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { type ClientHttp2Session, connect } from "node:http2";
import { createRequire } from "node:module";
import { cpus } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  create,
  type DescMessage,
  type DescService,
  type MessageInitShape,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";
import type { Transport } from "@connectrpc/connect";
import autocannon from "autocannon";
import { openChannel } from "../src/client/channel.js";
import { ensureH2load } from "../test/infra/h2load.js";
import { repoRoot } from "../test/infra/process.js";
import { ensureGoTool, exec, goTools, outputTail } from "../test/interop/go-tools.js";
import {
  closedLoop,
  openLoop,
  type PairedLatency,
  type Sample,
  type Side,
  settings,
} from "./harness.js";
import type { Server } from "./servers.js";

/** Scratch files (protoset, request bodies, h2load logs): git-ignored. */
export const scratch = join(repoRoot, ".cache", "bench");

export const tools = { ghz: "", h2load: "", protoset: join(scratch, "protoset.binpb") };

/** Builds ghz (pinned, cached), installs h2load if missing, compiles the protoset ghz reads. */
export const prepareTools = async (log: (line: string) => void) => {
  mkdirSync(scratch, { recursive: true });
  // Request bodies and logs are named per run: the ones of earlier runs would pile up.
  for (const name of readdirSync(scratch)) {
    if (/^(?:request-\d+-\d+\.(?:bin|json)|h2load-\d+\.log)$/.test(name))
      rmSync(join(scratch, name));
  }
  const ghz = await ensureGoTool(goTools.ghz);
  if (ghz.built) log(`built ghz ${goTools.ghz.version}`);
  tools.ghz = ghz.binary;
  tools.h2load = await ensureH2load({ log });
  // The servers need not offer reflection (the bare one does not): ghz reads the
  // descriptors of every proto of the repository, as buf compiles them.
  const buf = await exec(join(repoRoot, "node_modules", ".bin", "buf"), [
    "build",
    "-o",
    tools.protoset,
  ]);
  if (buf.code !== 0) throw new Error(`buf build failed:\n${outputTail(buf)}`);
};

export const toolVersions = async () => {
  const first = async (cmd: string, args: string[]) => {
    const out = await exec(cmd, args);
    return `${out.stdout}${out.stderr}`.trim().split("\n")[0] ?? "";
  };
  const { version } = createRequire(import.meta.url)("autocannon/package.json") as {
    version: string;
  };
  return {
    // `go install` builds carry no version string of their own ("dev").
    ghz: `ghz ${goTools.ghz.version}`,
    h2load: await first(tools.h2load, ["--version"]),
    autocannon: `autocannon ${version}`,
  };
};

// ---- gRPC: h2load + ghz ----------------------------------------------------

/** One unary gRPC call: service, method and request (make it with `grpcCall`). */
export interface GrpcCall {
  readonly service: DescService;
  readonly method: string;
  readonly request: unknown;
}

/** A `GrpcCall` whose request is type-checked against the method's input. */
export const grpcCall = <S extends DescService, M extends keyof S["method"] & string>(
  service: S,
  method: M,
  request: S["method"][M] extends { input: infer I extends DescMessage }
    ? MessageInitShape<I>
    : never,
): GrpcCall => ({ service, method, request });

let bodies = 0;

/** The call's request as a gRPC length-prefixed frame in a file, for h2load's `-d`. */
const requestFrame = (call: GrpcCall) => {
  const method = call.service.method[call.method];
  if (method === undefined) throw new Error(`no method ${call.method}`);
  // grpcCall checked the request's shape against this very method's input.
  const message = create(method.input, call.request as MessageInitShape<DescMessage>);
  const bytes = toBinary(method.input, message);
  const frame = Buffer.alloc(5 + bytes.length);
  frame.writeUInt32BE(bytes.length, 1);
  frame.set(bytes, 5);
  const file = join(scratch, `request-${process.pid}-${bodies++}.bin`);
  writeFileSync(file, frame);
  return {
    file,
    frame,
    json: toJsonString(method.input, message),
    path: `/${call.service.typeName}/${method.name}`,
    ghzCall: `${call.service.typeName}/${method.name}`,
  };
};

interface GhzReport {
  count: number;
  total: number;
  statusCodeDistribution?: Record<string, number>;
  errorDistribution?: Record<string, number>;
  details?: Array<{ latency: number; status: string }>;
}

const ghz = async (
  server: Server,
  call: { readonly ghzCall: string; readonly json?: string; readonly dataFile?: string },
  extra: string[],
  pinned = false,
) => {
  const args = [
    "--insecure",
    `--protoset=${tools.protoset}`,
    `--call=${call.ghzCall}`,
    call.dataFile === undefined ? `--data=${call.json}` : `--data-file=${call.dataFile}`,
    // One core for the generator, the other for the server; Go would otherwise
    // spread over both and take CPU from the process being measured.
    "--cpus=1",
    "--format=json",
    ...extra,
    server.target,
  ];
  const last = cpus().length - 1;
  const out =
    pinned && last > 0
      ? await exec("taskset", ["--cpu-list", String(last), tools.ghz, ...args])
      : await exec(tools.ghz, args);
  if (out.code !== 0) throw new Error(`ghz failed (exit ${out.code}):\n${outputTail(out)}`);
  return JSON.parse(out.stdout) as GhzReport;
};

const ghzErrors = (r: GhzReport) =>
  Object.entries(r.statusCodeDistribution ?? {}).reduce(
    (s, [status, n]) => (status === "OK" ? s : s + n),
    0,
  );

/**
 * One h2load throughput round, the server's processes on the first core and
 * h2load on the last: "per core" means one core. A call counts when its
 * HTTP status is 200 (gRPC's own status is checked once, with ghz).
 */
const h2loadRun = async (
  pids: ReadonlyArray<number>,
  seconds: number,
  args: ReadonlyArray<string>,
): Promise<Sample> => {
  const log = join(scratch, `h2load-${process.pid}.log`);
  const last = cpus().length - 1;
  if (last > 0) for (const pid of pids) pin(pid, "0");
  const out = await exec(last > 0 ? "taskset" : tools.h2load, [
    ...(last > 0 ? ["--cpu-list", String(last), tools.h2load] : []),
    `--duration=${Math.round(seconds * 1000)}ms`,
    `--log-file=${log}`,
    ...args,
  ]);
  if (out.code !== 0) throw new Error(`h2load failed (exit ${out.code}):\n${outputTail(out)}`);
  const finished = /finished in ([\d.]+)(m?s),/.exec(out.stdout);
  const requests = /requests: .* (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
    out.stdout,
  );
  if (!finished || !requests) throw new Error(`cannot read h2load's output:\n${out.stdout}`);
  // Per request: start (µs since the epoch), HTTP status, duration (µs).
  const latencies: number[] = [];
  for (const line of readFileSync(log, "utf8").split("\n")) {
    const [, status, micros] = line.split("\t");
    if (status === "200") latencies.push(Number(micros) / 1000);
  }
  rmSync(log, { force: true });
  const [, , failed, errored, timeout] = requests.map(Number);
  return {
    latencies,
    // h2load's "succeeded" counts any status; a call is one answered 200.
    count: latencies.length,
    seconds: Number(finished[1]) / (finished[2] === "ms" ? 1000 : 1),
    errors: (failed ?? 0) + (errored ?? 0) + (timeout ?? 0),
  };
};

/**
 * A gRPC side: throughput with h2load over 4 connections × 4 streams
 * (`settings.concurrency` in all), latency with ghz at a fixed rate. Checks
 * once with ghz that the call answers OK, as h2load cannot tell.
 */
export const grpcSide = async (opts: {
  label: string;
  server: Server;
  call: GrpcCall;
  pids?: ReadonlyArray<number>;
  /** How the pair runs its latency phase, when not with ghz. */
  tool?: string;
}): Promise<Side> => {
  const call = requestFrame(opts.call);
  const probe = await ghz(opts.server, call, ["--total=3", "--concurrency=1"]);
  if (probe.statusCodeDistribution?.OK !== 3)
    throw new Error(
      `${call.ghzCall} on ${opts.label} does not answer OK: ${JSON.stringify(probe.statusCodeDistribution ?? probe.errorDistribution)}`,
    );
  const streams = 4;
  return {
    label: opts.label,
    tool: opts.tool ?? "h2load / ghz",
    pids: opts.pids ?? [opts.server.pid],
    throughput: (seconds) =>
      h2loadRun(opts.pids ?? [opts.server.pid], seconds, [
        `--clients=${settings.concurrency / streams}`,
        `--max-concurrent-streams=${streams}`,
        `--data=${call.file}`,
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        `${opts.server.url}${call.path}`,
      ]),
    latency: async (rps, seconds) => {
      const report = await ghz(opts.server, call, [
        `--rps=${rps}`,
        // Open loop: a call leaves on schedule even while earlier ones are pending.
        "--async",
        `--concurrency=${settings.concurrency}`,
        `--duration=${seconds}s`,
        // Calls in flight at the end are awaited, not counted as cancelled.
        "--duration-stop=wait",
      ]);
      const details = report.details ?? [];
      return {
        latencies: details.filter((d) => d.status === "OK").map((d) => d.latency / 1e6),
        count: report.count - ghzErrors(report),
        seconds: report.total / 1e9,
        errors: ghzErrors(report),
      };
    },
  };
};

/**
 * A gRPC side loaded by ghz cycling through `calls` (one request each in
 * turn), for calls h2load cannot make: it sends one body only, and a Write
 * repeated on one address queues behind itself. Throughput only, at
 * `concurrency` calls in flight (default `settings.concurrency`) over 4
 * connections; the server on the first core, ghz on the last, as the h2load
 * sides.
 */
export const ghzCyclingSide = (opts: {
  label: string;
  server: Server;
  calls: ReadonlyArray<GrpcCall>;
  pids?: ReadonlyArray<number>;
  concurrency?: number;
}): Side => {
  const [first] = opts.calls;
  if (first === undefined) throw new Error(`${opts.label}: no calls`);
  const method = first.service.method[first.method];
  if (method === undefined) throw new Error(`no method ${first.method}`);
  const dataFile = join(scratch, `requests-${process.pid}-${bodies++}.json`);
  const messages = opts.calls.map((c) =>
    toJsonString(method.input, create(method.input, c.request as MessageInitShape<DescMessage>)),
  );
  writeFileSync(dataFile, `[${messages.join(",")}]`);
  const call = { ghzCall: `${first.service.typeName}/${method.name}`, dataFile };
  const pids = opts.pids ?? [opts.server.pid];
  return {
    label: opts.label,
    tool: "ghz",
    pids,
    throughput: async (seconds) => {
      if (cpus().length > 1) for (const pid of pids) pin(pid, "0");
      const report = await ghz(
        opts.server,
        call,
        [
          `--concurrency=${opts.concurrency ?? settings.concurrency}`,
          "--connections=4",
          `--duration=${Math.round(seconds * 1000)}ms`,
          "--duration-stop=wait",
        ],
        true,
      );
      return {
        latencies: [],
        count: report.count - ghzErrors(report),
        seconds: report.total / 1e9,
        errors: ghzErrors(report),
      };
    },
  };
};

/** Sets the CPUs every thread of `pid` may run on (`taskset`, util-linux). */
const pin = (pid: number, cpus: string) =>
  execFileSync("taskset", ["--all-tasks", "--pid", "--cpu-list", cpus, String(pid)], {
    stdio: "ignore",
  });

/** One gRPC unary call over `session`, raw: resolves once its trailers say OK. */
const rawUnary = (session: ClientHttp2Session, path: string, frame: Buffer) =>
  new Promise<void>((resolve, reject) => {
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
    });
    let status: unknown;
    stream.on("trailers", (trailers) => {
      status = trailers["grpc-status"];
    });
    stream.on("data", () => {});
    stream.on("end", () =>
      status === "0" ? resolve() : reject(new Error(`grpc-status ${String(status)}`)),
    );
    stream.on("error", reject);
    stream.end(frame);
  });

/**
 * The latency phase of a pair of gRPC servers loaded together
 * (`PairedLatency`): one open loop in the bench process sends the call to
 * A and B in turn, `rps` in all (half to each), over one HTTP/2 connection
 * each, as raw frames (no client library in the way). While it runs, both
 * servers share the last core, which so carries the load one server alone
 * would at `rps`, and the bench process has the first, so neither server
 * lands on the generator's core by chance. Whatever the machine does during
 * the run (clock, other tenants, timer wake-ups), both sides' calls see it
 * in the same proportion; run one after the other, rounds of the same
 * server differ by more than the costs this pair compares.
 */
export const pairedGrpcLatency = (a: Server, b: Server, call: GrpcCall): PairedLatency => {
  const { frame, path } = requestFrame(call);
  const last = cpus().length - 1;
  return async (rps, seconds, round) => {
    const sides = [a, b].map((server) => {
      const session = connect(server.url);
      // A session error fails its open calls, which count as errors; one that comes after the
      // run (a server stopping while the session still closes) must not end the bench.
      session.on("error", () => {});
      return { session, latencies: [] as number[], errors: 0 };
    });
    // Connected before the clock starts: no call of the run pays for the handshake.
    await Promise.all(sides.map((side) => rawUnary(side.session, path, frame)));
    let next = round;
    const alternate = async () => {
      const side = sides[next++ % 2] as (typeof sides)[number];
      const t = performance.now();
      try {
        await rawUnary(side.session, path, frame);
        side.latencies.push(performance.now() - t);
      } catch {
        side.errors++;
      }
    };
    if (last > 0) {
      pin(a.pid, String(last));
      pin(b.pid, String(last));
      pin(process.pid, "0");
    }
    try {
      const run = await openLoop(alternate, rps, seconds);
      const [sa, sb] = sides.map(
        (side): Sample => ({
          latencies: side.latencies,
          count: side.latencies.length,
          seconds: run.seconds,
          // Calls the loop could not issue (too many in flight) count against both.
          errors: side.errors + run.errors,
        }),
      ) as [Sample, Sample];
      return { a: sa, b: sb };
    } finally {
      for (const side of sides) side.session.close();
      if (last > 0) for (const pid of [a.pid, b.pid, process.pid]) pin(pid, `0-${last}`);
    }
  };
};

// ---- Connect over HTTP/1.1: h2load --h1, autocannon -----------------------------

const cannon = async (
  url: string,
  body: string,
  seconds: number,
  rate?: number,
): Promise<Sample> => {
  const latencies: number[] = [];
  const started = performance.now();
  const instance = autocannon({
    url,
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
    connections: settings.concurrency,
    duration: seconds,
    ...(rate === undefined ? {} : { overallRate: rate }),
  });
  instance.on("response", (_client, statusCode, _bytes, responseTime) => {
    if (statusCode === 200) latencies.push(responseTime);
  });
  const result = await instance;
  return {
    latencies,
    count: latencies.length,
    seconds: (performance.now() - started) / 1000,
    errors: result.errors + result.timeouts + result.non2xx,
  };
};

/**
 * A Connect (JSON over HTTP/1.1) side: `settings.concurrency` keep-alive
 * connections, each with one request at a time. Throughput with h2load
 * (`--h1`), pinned as the gRPC sides are; latency with autocannon at a
 * fixed rate (`overallRate`: at the rates used here each connection's
 * interval is many times the latency, so calls leave on schedule).
 */
export const connectSide = (opts: { label: string; server: Server; call: GrpcCall }): Side => {
  const { file, json, path } = requestFrame(opts.call);
  const url = `${opts.server.http1Url}${path}`;
  // h2load reads the body from a file; only this side sends JSON.
  const jsonFile = `${file.slice(0, -".bin".length)}.json`;
  writeFileSync(jsonFile, json);
  return {
    label: opts.label,
    tool: "h2load --h1 / autocannon",
    pids: [opts.server.pid],
    throughput: (seconds) =>
      h2loadRun([opts.server.pid], seconds, [
        "--h1",
        `--clients=${settings.concurrency}`,
        `--data=${jsonFile}`,
        "--header=content-type: application/json",
        url,
      ]),
    latency: (rps, seconds) => cannon(url, json, seconds, rps),
  };
};

// ---- a driver call in the bench process ---------------------------------------

/** A side loaded by the bench process itself (closed loop, then open loop). */
export const nodeSide = (opts: {
  label: string;
  tool: string;
  call: () => Promise<unknown>;
  pids?: ReadonlyArray<number>;
  cpuAlso?: ReadonlyArray<number>;
}): Side => ({
  label: opts.label,
  tool: opts.tool,
  pids: opts.pids ?? [],
  ...(opts.cpuAlso === undefined ? {} : { cpuAlso: opts.cpuAlso }),
  throughput: (seconds) => closedLoop(opts.call, seconds),
  latency: (rps, seconds) => openLoop(opts.call, rps, seconds),
});

/** How the in-process pairs call the mesh. */
export const NODE_CLIENT = "Node: the mesh client's grpc-js channel, native gRPC port";

const NEVER = new AbortController().signal;

/**
 * A Connect transport on the grpc-js channel of the mesh's own client
 * (src/client/channel.ts, MeshClient's default), for the in-process pairs:
 * the pairs share two cores with their load, and this client takes about
 * half the CPU per call of connect-node's gRPC transport (230 vs 460 µs per
 * GetEntity here), which the server under test then has. Unary, server
 * streams and bidirectional streams, as the pairs use them.
 */
export const grpcJsTransport = (url: string): Transport => {
  const channel = openChannel("grpc", url);
  const common = <M extends { parent: DescService }>(method: M) => ({
    service: method.parent,
    method,
    header: new Headers(),
    trailer: new Headers(),
  });
  const call = (signal: AbortSignal | undefined, timeoutMs: number | undefined) => ({
    signal: signal ?? NEVER,
    timeoutMs,
    headers: {},
  });
  return {
    unary: async (method, signal, timeoutMs, _header, input) => ({
      ...common(method),
      stream: false,
      message: await channel.unary(method, create(method.input, input), call(signal, timeoutMs)),
    }),
    stream: async (method, signal, timeoutMs, _header, input) => {
      const inputs = (async function* () {
        for await (const i of input) yield create(method.input, i);
      })();
      const options = call(signal, timeoutMs);
      switch (method.methodKind) {
        case "server_streaming": {
          const first = await inputs.next();
          if (first.done === true) throw new Error(`${method.name}: no request`);
          return {
            ...common(method),
            stream: true,
            message: channel.stream(method, first.value, options),
          };
        }
        case "bidi_streaming":
          return {
            ...common(method),
            stream: true,
            message: channel.bidi(method, inputs, options),
          };
        default:
          throw new Error(`${method.name}: client streams are not used by the pairs`);
      }
    },
  };
};
