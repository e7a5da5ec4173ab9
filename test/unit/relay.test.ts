/**
 * The relay between real HTTP/2 connections: a front server that relays
 * MemoryManager calls, and an upstream node:http2 server standing in for the
 * node that hosts them, which records what reached it. What the hop changes
 * in the request (trace context, deadline, who the caller is), which calls it
 * sends again after a node failed, deadlines and cancellation, and the
 * errors it answers itself in each protocol.
 */
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { Layer, ManagedRuntime } from "effect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ExistsResponseSchema,
  MemoryManagerService,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { defaultConfig, MeshConfig } from "../../src/config.js";
import type { AuthOptions } from "../../src/server/auth.js";
import { type Listening, listen, writeHead } from "../../src/server/http.js";
import { makePolicy, type Policy } from "../../src/server/policy.js";
import { makeRelay, type Relay } from "../../src/server/relay.js";
import { Telemetry, telemetryLayer } from "../../src/telemetry/pipeline.js";
import { failureOf, type ProtocolName, protocols } from "../support/clients.js";

const EXISTS = `/${MemoryManagerService.typeName}/Exists`;
const ALLOCATE = `/${MemoryManagerService.typeName}/Allocate`;
const address = { kind: { case: "text" as const, value: "e1:f1:PROCESS:main:s1:json" } };

/**
 * What the upstream does with a call: answer it, reset it, leave it hanging, or reset it after
 * sending its headers (`cut`) or its headers and whole message (`cut-after-message`).
 */
type Behaviour = "answer" | "reset" | "hang" | "cut" | "cut-after-message";

interface Upstream {
  readonly url: string;
  readonly seen: Array<{ path: string; headers: http2.IncomingHttpHeaders }>;
  /** Streams closed by the relay before they were answered (cancellation). */
  cancelled: number;
  behaviour: Behaviour;
  readonly close: () => Promise<void>;
}

const exists = toBinary(ExistsResponseSchema, create(ExistsResponseSchema, { exists: true }));

const startUpstream = async (): Promise<Upstream> => {
  const server = http2.createServer();
  const upstream: Upstream = {
    url: "",
    seen: [],
    cancelled: 0,
    behaviour: "answer",
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of sessions) s.destroy();
      }),
  };
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  server.on("stream", (stream: http2.ServerHttp2Stream, headers) => {
    upstream.seen.push({ path: String(headers[":path"]), headers });
    stream.on("error", () => {});
    stream.resume();
    stream.once("close", () => {
      if (!stream.headersSent) upstream.cancelled++;
    });
    stream.once("end", () => {
      if (upstream.behaviour === "reset") stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      if (upstream.behaviour === "reset" || upstream.behaviour === "hang") return;
      // Exists answers that it does; any other method its empty response.
      const message = headers[":path"] === EXISTS ? exists : new Uint8Array();
      if (headers["content-type"] === "application/proto") {
        // Connect unary: the message alone.
        stream.respond({ ":status": 200, "content-type": "application/proto" });
        stream.end(message);
        return;
      }
      const frame = Buffer.alloc(5 + message.length);
      frame.writeUInt32BE(message.length, 1);
      frame.set(message, 5);
      stream.respond(
        { ":status": 200, "content-type": "application/grpc" },
        { waitForTrailers: true },
      );
      const cut = () => setTimeout(() => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR), 20);
      if (upstream.behaviour === "cut") return cut();
      if (upstream.behaviour === "cut-after-message") {
        stream.write(frame);
        return cut();
      }
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(frame);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return Object.assign(upstream, {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
  });
};

const spans = new InMemorySpanExporter();
const runtime = ManagedRuntime.make(
  telemetryLayer({ spanProcessors: [new SimpleSpanProcessor(spans)] }).pipe(
    Layer.provide(Layer.succeed(MeshConfig, defaultConfig())),
  ),
);

let upstream: Upstream;
let front: Listening;
let frontUrl: string;
let relay: Relay;
/** The URLs the route hands out, in turn (the last one repeats); and the ones marked down. */
let targets: string[];
let downed: string[];
/** Calls the relay left to Connect. */
let leftToConnect: string[];

const startFront = async (
  over: {
    auth?: AuthOptions;
    admit?: Policy["admit"];
    meshToken?: string;
    maxRequestBytes?: number;
  } = {},
) => {
  const telemetry = await runtime.runPromise(Telemetry);
  const { auth, admit, ...rest } = over;
  const policy = makePolicy({ auth, limits: { rate: 0, maxStreams: 10 }, telemetry });
  relay = makeRelay({
    services: [MemoryManagerService],
    route: {
      next: () => (targets.length > 1 ? targets.shift() : targets[0]),
      down: (url) => {
        downed.push(url);
      },
    },
    policy: admit === undefined ? policy : { ...policy, admit },
    propagator: telemetry.propagator,
    maxRequestBytes: over.maxRequestBytes ?? 1024 * 1024,
    ...rest,
  });
  front = await listen(
    (req, res) => {
      if (relay.handle(req, res)) return;
      leftToConnect.push(req.url ?? "");
      writeHead(res, 404);
      res.end();
    },
    "127.0.0.1",
    0,
  );
  frontUrl = `http://127.0.0.1:${front.port}`;
};

const memory = (protocol: ProtocolName = "gRPC (h2c)") =>
  createClient(MemoryManagerService, protocols[protocol](frontUrl));

beforeAll(async () => {
  upstream = await startUpstream();
});
afterEach(async () => {
  relay?.close();
  await front?.close(100);
  upstream.seen.length = 0;
  upstream.cancelled = 0;
  upstream.behaviour = "answer";
  spans.reset();
});
afterAll(async () => {
  await upstream.close();
  await runtime.dispose();
});

const setup = async (over: Parameters<typeof startFront>[0] = {}) => {
  targets = [upstream.url];
  downed = [];
  leftToConnect = [];
  await startFront(over);
};

/** A port nothing listens on: connecting to it is refused. */
const closedPort = async () => {
  const probe = http2.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  return `http://127.0.0.1:${port}`;
};

describe("the relay", () => {
  it("passes the call on with its own span as the parent, the deadline shrunk, and answers", async () => {
    await setup();
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const res = await memory().exists(
      { address },
      { timeoutMs: 5000, headers: { traceparent: `00-${traceId}-b7ad6b7169203331-01` } },
    );
    expect(res.exists).toBe(true);
    const [call] = upstream.seen;
    expect(call?.path).toBe(EXISTS);
    const [span] = spans.getFinishedSpans();
    expect(span?.name).toBe(`${MemoryManagerService.typeName}/Exists`);
    expect(span?.spanContext().traceId).toBe(traceId);
    expect(span?.attributes["rpc.grpc.status_code"]).toBe(0);
    expect(span?.attributes["fo.forwarded_to"]).toBe(upstream.url);
    expect(call?.headers.traceparent).toBe(`00-${traceId}-${span?.spanContext().spanId}-01`);
    // Whole milliseconds, never more than the caller gave (how much less depends on the machine).
    const timeout = /^(\d+)m$/.exec(String(call?.headers["grpc-timeout"]));
    expect(Number(timeout?.[1])).toBeGreaterThan(0);
    expect(Number(timeout?.[1])).toBeLessThanOrEqual(5000);
  });

  it("sends the deadline on in whole units, whatever unit the caller used", async () => {
    await setup();
    // 2.5 s in microseconds, as grpc-go sends it; and more than gRPC's 8 digits of milliseconds.
    await memory().exists({ address }, { headers: { "grpc-timeout": "2500000u" } });
    // Each is a whole number in its unit, and never more than the caller gave.
    const whole = (value: unknown, unit: string) =>
      Number(new RegExp(`^(\\d+)${unit}$`).exec(String(value))?.[1]);
    expect(whole(upstream.seen[0]?.headers["grpc-timeout"], "m")).toBeGreaterThan(0);
    expect(whole(upstream.seen[0]?.headers["grpc-timeout"], "m")).toBeLessThanOrEqual(2500);
    await memory().exists({ address }, { headers: { "grpc-timeout": "30H" } });
    expect(whole(upstream.seen[1]?.headers["grpc-timeout"], "S")).toBeGreaterThan(0);
    expect(whole(upstream.seen[1]?.headers["grpc-timeout"], "S")).toBeLessThanOrEqual(108_000);
    await memory("Connect over HTTP/1.1").exists(
      { address },
      { headers: { "connect-timeout-ms": "2500" } },
    );
    expect(whole(upstream.seen[2]?.headers["connect-timeout-ms"], "")).toBeGreaterThan(0);
    expect(whole(upstream.seen[2]?.headers["connect-timeout-ms"], "")).toBeLessThanOrEqual(2500);
  });

  it("passes on who the caller is, never a principal the caller named itself", async () => {
    // Without authentication here, a caller's fo-forwarded-principal is dropped; the node's token goes.
    await setup({ meshToken: "node-secret" });
    await memory().exists({ address }, { headers: { "fo-forwarded-principal": "admin" } });
    expect(upstream.seen[0]?.headers["fo-forwarded-principal"]).toBeUndefined();
    expect(upstream.seen[0]?.headers.authorization).toBe("Bearer node-secret");
    // The caller's own credentials go on as they came.
    await memory().exists({ address }, { headers: { authorization: "Bearer caller" } });
    expect(upstream.seen[1]?.headers.authorization).toBe("Bearer caller");
  });

  it("passes on the principal it authenticated, when there is no header to pass", async () => {
    await setup({ admit: () => ({ principal: "importer", release: undefined }) });
    await memory().exists({ address });
    expect(upstream.seen[0]?.headers["fo-forwarded-principal"]).toBe("importer");
  });

  it("leaves calls it refuses, does not know, or has no node for, to Connect", async () => {
    await setup({ auth: { tokens: [], mtls: false, trustedForwarders: [] } });
    await failureOf(memory().exists({ address }));
    expect(leftToConnect).toEqual([EXISTS]);
    relay.close();
    await front.close(100);
    await setup();
    targets = [];
    await failureOf(memory().exists({ address }));
    const unknown = await fetch(`${frontUrl}/${MemoryManagerService.typeName}/Nope`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(unknown.status).toBe(404);
    expect(leftToConnect).toEqual([EXISTS, `/${MemoryManagerService.typeName}/Nope`]);
    expect(upstream.seen).toHaveLength(0);
  });

  it("sends a call that reached no node to the next one, and marks the first down", async () => {
    await setup();
    const dead = await closedPort();
    targets = [dead, upstream.url];
    // Allocate has side effects: it may go again only because the first node never got it.
    await memory().allocate({ address });
    expect(downed).toEqual([dead]);
    expect(upstream.seen.map((c) => c.path)).toEqual([ALLOCATE]);
  });

  it("sends a call a node may have begun again only if it is idempotent", async () => {
    await setup();
    upstream.behaviour = "reset";
    const second = await startUpstream();
    try {
      targets = [upstream.url, second.url];
      const error = await failureOf(memory().allocate({ address }));
      expect(error.code).toBe(Code.Unavailable);
      expect(second.seen).toHaveLength(0);
      targets = [upstream.url, second.url];
      expect((await memory().exists({ address })).exists).toBe(true);
      expect(second.seen.map((c) => c.path)).toEqual([EXISTS]);
      expect(downed).toEqual([upstream.url, upstream.url]);
    } finally {
      await second.close();
    }
  });

  it("treats a node lost after its headers as one that never answered, and after a message as UNAVAILABLE", async () => {
    await setup();
    upstream.behaviour = "cut";
    const second = await startUpstream();
    try {
      // Nothing of the answer reached the caller: an idempotent call goes to the next node.
      targets = [upstream.url, second.url];
      expect((await memory().exists({ address })).exists).toBe(true);
      expect(second.seen.map((c) => c.path)).toEqual([EXISTS]);
      // A call with side effects does not, and fails with a status a client can act on.
      targets = [upstream.url, second.url];
      expect((await failureOf(memory().allocate({ address }))).code).toBe(Code.Unavailable);
      // Cut after a whole message: the caller's call ends with UNAVAILABLE, not a reset (INTERNAL).
      upstream.behaviour = "cut-after-message";
      targets = [upstream.url];
      const error = await failureOf(memory().exists({ address }));
      expect(error.code).toBe(Code.Unavailable);
      expect(error.rawMessage).toMatch(/went away/);
      expect(second.seen).toHaveLength(1);
    } finally {
      await second.close();
    }
  });

  it("answers DEADLINE_EXCEEDED when the deadline passes, and cancels the call downstream", async () => {
    await setup();
    upstream.behaviour = "hang";
    // A caller that sends a deadline but does not enforce it: the relay's answer is what arrives.
    const session = http2.connect(frontUrl);
    try {
      const call = session.request({
        ":method": "POST",
        ":path": EXISTS,
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-timeout": "200m",
      });
      call.end(Buffer.alloc(5));
      const status = await new Promise<unknown>((resolve) => {
        call.on("trailers", (t) => resolve(t["grpc-status"]));
        call.on("response", (h) => h["grpc-status"] !== undefined && resolve(h["grpc-status"]));
        call.resume();
      });
      expect(status).toBe(String(Code.DeadlineExceeded));
    } finally {
      session.close();
    }
    for (let i = 0; i < 50 && upstream.cancelled === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(upstream.cancelled).toBe(1);
  });

  it("cancels the call downstream when the caller goes away", async () => {
    await setup();
    upstream.behaviour = "hang";
    const abort = new AbortController();
    const call = failureOf(memory().exists({ address }, { signal: abort.signal }));
    for (let i = 0; i < 50 && upstream.seen.length === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    abort.abort();
    expect((await call).code).toBe(Code.Canceled);
    for (let i = 0; i < 50 && upstream.cancelled === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(upstream.cancelled).toBe(1);
    for (let i = 0; i < 50 && spans.getFinishedSpans().length === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(spans.getFinishedSpans()[0]?.attributes["rpc.grpc.status_code"]).toBe(Code.Canceled);
  });

  it.each([
    "gRPC (h2c)",
    "gRPC-Web over HTTP/1.1",
    "Connect over HTTP/1.1",
    "Connect over HTTP/2",
  ] as const)("answers UNAVAILABLE in %s when no node can be reached", async (protocol) => {
    await setup();
    targets = [await closedPort()];
    const error = await failureOf(memory(protocol).exists({ address }));
    expect(error).toBeInstanceOf(ConnectError);
    expect(error.code).toBe(Code.Unavailable);
    expect(error.rawMessage).toContain("cannot be reached");
    // A stream too, which Connect frames differently.
    const stream = await failureOf(
      (async () => {
        for await (const _ of memory(protocol).watchMemory({ executionId: "e1" })) break;
      })(),
    );
    expect(stream.code).toBe(Code.Unavailable);
  });

  it("refuses a request larger than the limit with RESOURCE_EXHAUSTED", async () => {
    await setup({ maxRequestBytes: 100 });
    const error = await failureOf(
      memory().exists({ address: { kind: { case: "text", value: "x".repeat(500) } } }),
    );
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(upstream.seen).toHaveLength(0);
  });
});
