/**
 * The mesh's telemetry checked by the real components from test/infra: a
 * call with a known `traceparent` is exported over OTLP to Jaeger, whose
 * query API returns the trace with the server span and a backend child
 * span; a real Prometheus scrapes `/metrics` from the mesh port and answers
 * PromQL about the RPC metrics; `promtool check metrics` accepts the
 * exposition.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Option } from "effect";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { defaultConfig } from "../../src/config.js";
import type { InfraAddresses } from "../infra/index.js";
import { type PrometheusServer, startPrometheus } from "../infra/prometheus.js";
import { clientFor } from "../support/clients.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { poll } from "../support/poll.js";

const infra: InfraAddresses = inject("infra");

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh({
    telemetry: {
      ...defaultConfig().telemetry,
      serviceName: `mesh-it-${randomBytes(4).toString("hex")}`,
      otlpEndpoint: Option.some(infra.jaeger.otlpHttp),
    },
  });
});
afterAll(() => mesh.close());

describe("traces in Jaeger", () => {
  it("a call's trace arrives with the server span and a backend child span", async () => {
    const traceId = randomBytes(16).toString("hex");
    const parentId = randomBytes(8).toString("hex");
    await clientFor(DataStoreService, "gRPC (h2c)", mesh.url).createEntity(
      { kind: "flow", document: { name: "traced to jaeger" } },
      { headers: { traceparent: `00-${traceId}-${parentId}-01` } },
    );
    type JaegerSpan = {
      spanID: string;
      operationName: string;
      references: { refType: string; spanID: string }[];
      tags: { key: string; value: unknown }[];
    };
    const spans = await poll("the trace in Jaeger", async () => {
      const res = await fetch(`${infra.jaeger.query}/api/traces/${traceId}`);
      if (!res.ok) return undefined;
      const body = (await res.json()) as { data: { spans: JaegerSpan[] }[] };
      const found = body.data[0]?.spans ?? [];
      return found.some((s) => s.operationName.startsWith("datastore.")) ? found : undefined;
    });
    const server = spans.find(
      (s) => s.operationName === "floworchestrator.datastore.v1.DataStoreService/CreateEntity",
    );
    expect(server?.references).toContainEqual(
      expect.objectContaining({ refType: "CHILD_OF", spanID: parentId }),
    );
    expect(server?.tags).toContainEqual({ key: "rpc.grpc.status_code", value: 0, type: "int64" });
    const backend = spans.filter((s) => s.operationName.startsWith("datastore."));
    const ids = new Set([server?.spanID, ...backend.map((s) => s.spanID)]);
    for (const span of backend) {
      expect(span.references.some((r) => r.refType === "CHILD_OF" && ids.has(r.spanID))).toBe(true);
    }
  });
});

describe("metrics in Prometheus", () => {
  let prometheus: PrometheusServer | undefined;
  beforeAll(async () => {
    prometheus = await startPrometheus({
      scrapeTarget: new URL(mesh.url).host,
      scrapeIntervalMs: 500,
    });
  });
  afterAll(() => prometheus?.stop());

  it("promtool accepts the exposition at /metrics", async () => {
    await clientFor(DataStoreService, "Connect over HTTP/1.1", mesh.url).listEntities({
      kind: "flow",
    });
    const text = await (await fetch(`${mesh.url}/metrics`)).text();
    const check = spawnSync(infra.prometheus.promtool, ["check", "metrics"], {
      input: text,
      encoding: "utf8",
    });
    // 0: valid; 3: lint remarks only (e.g. naming advice), still parsed.
    expect([0, 3], `${check.stdout}${check.stderr}`).toContain(check.status);
    expect(`${check.stdout}${check.stderr}`).not.toMatch(/error while linting|parse error/i);
  });

  it("a real Prometheus scrapes the mesh and answers PromQL about its RPCs", async () => {
    await clientFor(DataStoreService, "gRPC (h2c)", mesh.url).listEntities({ kind: "flow" });
    type Vector = { metric: Record<string, string>; value: [number, string] }[];
    const result = await poll("rpc_server_requests_total in Prometheus", async () => {
      const query = encodeURIComponent(
        'sum by (rpc_method) (rpc_server_requests_total{rpc_method="ListEntities"})',
      );
      const res = await fetch(`${prometheus?.url}/api/v1/query?query=${query}`);
      const body = (await res.json()) as { data: { result: Vector } };
      return body.data.result.length > 0 ? body.data.result : undefined;
    });
    expect(Number(result[0]?.value[1])).toBeGreaterThanOrEqual(1);
  });
});
