/**
 * Every RPC observed: server spans (RPC conventions, status code, the
 * caller's trace continued from `traceparent`) and metrics on `/metrics`,
 * for a unary call, an error and a stream, over every protocol; and the
 * plain `/healthz` and `/readyz` endpoints following the health registry.
 */
import { randomBytes } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { clientFor, failureOf, protocolNames } from "../support/clients.js";
import { setHealth, startMesh, type TestMesh } from "../support/mesh.js";

const spans = new InMemorySpanExporter();
let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh({}, { spanProcessors: [new SimpleSpanProcessor(spans)] });
});
afterAll(() => mesh.close());

const traceparent = () => {
  const traceId = randomBytes(16).toString("hex");
  const parentId = randomBytes(8).toString("hex");
  return { traceId, parentId, header: `00-${traceId}-${parentId}-01` };
};

/** The finished spans of one trace (a stream's span ends a moment after the client sees its end). */
const spansOf = async (traceId: string, count = 1): Promise<ReadableSpan[]> => {
  for (let i = 0; i < 100; i++) {
    const found = spans.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
    if (found.length >= count) return found;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`no finished span of trace ${traceId}`);
};

const system = (protocol: string) => (protocol.startsWith("Connect") ? "connect_rpc" : "grpc");

describe.each(protocolNames)("%s", (protocol) => {
  const health = () => clientFor(Health, protocol, mesh.url);

  it("a unary call is a server span continuing the caller's trace", async () => {
    const parent = traceparent();
    await health().check({}, { headers: { traceparent: parent.header } });
    const [span] = await spansOf(parent.traceId);
    expect(span?.name).toBe("grpc.health.v1.Health/Check");
    expect(span?.kind).toBe(SpanKind.SERVER);
    expect(span?.parentSpanContext?.spanId).toBe(parent.parentId);
    expect(span?.attributes).toMatchObject({
      "rpc.system": system(protocol),
      "rpc.service": "grpc.health.v1.Health",
      "rpc.method": "Check",
      "rpc.grpc.status_code": 0,
    });
    expect(span?.status.code).not.toBe(SpanStatusCode.ERROR);
  });

  it("an error sets the status code attribute and an error status", async () => {
    const parent = traceparent();
    const err = await failureOf(
      health().check({ service: "no.such.Service" }, { headers: { traceparent: parent.header } }),
    );
    expect(err.code).toBe(Code.NotFound);
    const [span] = await spansOf(parent.traceId);
    expect(span?.attributes["rpc.grpc.status_code"]).toBe(Code.NotFound);
    expect(span?.status.code).toBe(SpanStatusCode.ERROR);
  });

  it("a stream's span ends when the stream does", async () => {
    const parent = traceparent();
    const abort = new AbortController();
    const stream = health().watch(
      { service: "" },
      { headers: { traceparent: parent.header }, signal: abort.signal },
    );
    await stream[Symbol.asyncIterator]().next(); // the current status
    abort.abort(); // the client leaves
    const [span] = await spansOf(parent.traceId);
    expect(span?.name).toBe("grpc.health.v1.Health/Watch");
  });
});

describe("backend work", () => {
  it("is a child span of the call's server span", async () => {
    const parent = traceparent();
    await clientFor(DataStoreService, "gRPC (h2c)", mesh.url).createEntity(
      { kind: "flow", document: { name: "traced" } },
      { headers: { traceparent: parent.header } },
    );
    const all = await spansOf(parent.traceId, 2);
    const server = all.find((s) => s.kind === SpanKind.SERVER);
    const backend = all.filter((s) => s.name.startsWith("datastore."));
    expect(server?.name).toBe("floworchestrator.datastore.v1.DataStoreService/CreateEntity");
    expect(backend.length).toBeGreaterThan(0);
    for (const span of backend) {
      expect(span.kind).toBe(SpanKind.CLIENT);
      expect(span.attributes["fo.backend"]).toBe("embedded");
    }
    // Each backend span descends from the server span (directly or through another backend span).
    const ids = new Set([
      server?.spanContext().spanId,
      ...backend.map((s) => s.spanContext().spanId),
    ]);
    for (const span of backend) expect(ids.has(span.parentSpanContext?.spanId)).toBe(true);
  });
});

describe("backend work in a stream", () => {
  it("is a child span of the stream's server span", async () => {
    const parent = traceparent();
    const abort = new AbortController();
    const stream = clientFor(MessageBusService, "gRPC (h2c)", mesh.url).subscribe(
      { group: `traced-${randomBytes(4).toString("hex")}`, eventTypes: ["Traced"] },
      { headers: { traceparent: parent.header }, signal: abort.signal },
    );
    await stream[Symbol.asyncIterator]().next(); // subscribed: topics ensured, group joined
    abort.abort();
    // The server span ends once the server has seen the stream close.
    let all = await spansOf(parent.traceId, 2);
    for (let i = 0; i < 100 && !all.some((s) => s.kind === SpanKind.SERVER); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      all = await spansOf(parent.traceId, 2);
    }
    const server = all.find((s) => s.kind === SpanKind.SERVER);
    expect(server?.name).toBe("floworchestrator.messaging.v1.MessageBusService/Subscribe");
    const backend = all.filter((s) => s.name.startsWith("messaging."));
    expect(backend.length).toBeGreaterThan(0);
    const ids = new Set([
      server?.spanContext().spanId,
      ...backend.map((s) => s.spanContext().spanId),
    ]);
    for (const span of backend) expect(ids.has(span.parentSpanContext?.spanId)).toBe(true);
  });
});

describe("metrics and probes", () => {
  it("/metrics has the duration histogram and request counts by method and code", async () => {
    await clientFor(Health, "gRPC (h2c)", mesh.url).check({});
    await failureOf(clientFor(Health, "gRPC (h2c)", mesh.url).check({ service: "nope" }));
    const res = await fetch(`${mesh.url}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toMatch(/# TYPE rpc_server_duration histogram/);
    expect(text).toMatch(/rpc_server_duration_bucket\{[^}]*rpc_method="Check"[^}]*le="1"\} \d+/);
    expect(text).toMatch(
      /rpc_server_requests_total\{[^}]*rpc_method="Check"[^}]*rpc_grpc_status_code="5"[^}]*\} [1-9]/,
    );
  });

  it("/healthz answers while the process lives; /readyz follows the backends", async () => {
    expect((await fetch(`${mesh.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${mesh.url}/readyz`)).status).toBe(200);
    await setHealth(mesh, "test.Backend", "NOT_SERVING");
    try {
      expect((await fetch(`${mesh.url}/readyz`)).status).toBe(503);
    } finally {
      await setHealth(mesh, "test.Backend", "SERVING");
    }
    expect((await fetch(`${mesh.url}/readyz`)).status).toBe(200);
  });
});
