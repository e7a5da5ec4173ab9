/**
 * OTLP export through the real OpenTelemetry exporters: a mesh pointed at a
 * local collector stand-in (an HTTP server recording what is POSTed to
 * `/v1/traces`, `/v1/metrics`, `/v1/logs`) exports a call's span, a metric
 * recorded through the TelemetryService and an emitted log; a mesh pointed
 * at a collector that is down still answers every call.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Duration, Option } from "effect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TelemetryService } from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { defaultConfig } from "../../src/config.js";
import { clientFor } from "../support/clients.js";
import { startMesh, type TestMesh } from "../support/mesh.js";

const received: Record<string, Buffer[]> = {};
let collector: Server;
let mesh: TestMesh;

const meshExportingTo = (endpoint: string) =>
  startMesh({
    telemetry: {
      ...defaultConfig().telemetry,
      otlpEndpoint: Option.some(endpoint),
      metricExportInterval: Duration.millis(300),
    },
  });

beforeAll(async () => {
  collector = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const path = req.url ?? "";
      received[path] = [...(received[path] ?? []), Buffer.concat(chunks)];
      res.writeHead(200, { "content-type": "application/x-protobuf" });
      res.end();
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
  mesh = await meshExportingTo(`http://127.0.0.1:${(collector.address() as AddressInfo).port}`);
});
afterAll(async () => {
  await mesh.close();
  collector.close();
});

/** Waits until some export to `path` contains `needle`. */
const exported = async (path: string, needle: Buffer) => {
  for (let i = 0; i < 100; i++) {
    if ((received[path] ?? []).some((body) => body.includes(needle))) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
};

describe("OTLP export", () => {
  it("a call's span reaches /v1/traces", async () => {
    const traceId = randomBytes(16);
    const parent = randomBytes(8).toString("hex");
    await clientFor(Health, "gRPC (h2c)", mesh.url).check(
      {},
      { headers: { traceparent: `00-${traceId.toString("hex")}-${parent}-01` } },
    );
    expect(await exported("/v1/traces", traceId)).toBe(true);
  });

  it("a metric recorded through the TelemetryService reaches /v1/metrics", async () => {
    const name = `e2e.otlp.rows_${randomBytes(3).toString("hex")}`;
    await clientFor(TelemetryService, "Connect over HTTP/1.1", mesh.url).recordMetrics({
      points: [{ name, kind: 1, value: 3 }],
    });
    expect(await exported("/v1/metrics", Buffer.from(name))).toBe(true);
  });

  it("an emitted log reaches /v1/logs", async () => {
    const body = `exported ${randomBytes(6).toString("hex")}`;
    await clientFor(TelemetryService, "Connect over HTTP/1.1", mesh.url).emitLogs({
      records: [{ severity: 9, body }],
    });
    expect(await exported("/v1/logs", Buffer.from(body))).toBe(true);
  });

  it("a collector that is down never fails a call", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const lonely = await meshExportingTo(`http://127.0.0.1:${port}`);
    try {
      const health = clientFor(Health, "gRPC (h2c)", lonely.url);
      for (let i = 0; i < 50; i++) await health.check({});
      // Past a failed metrics export (every 300 ms) and still answering.
      await new Promise((resolve) => setTimeout(resolve, 700));
      expect((await health.check({})).status).toBe(1);
    } finally {
      await lonely.close();
    }
  });
});
