/**
 * TelemetryService over the wire: metrics recorded by a Connect client and
 * a gRPC client scraped from `GET /metrics`, error codes with their
 * details, client spans joining a trace the mesh served, logs emitted over
 * gRPC-Web, and GetHealth / WatchHealth following the health registry.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { InMemoryLogRecordExporter, SimpleLogRecordProcessor } from "@opentelemetry/sdk-logs";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema } from "../../gen/floworchestrator/common/v1/error_pb.js";
import {
  LogSeverity,
  MetricKind,
  ServingStatus,
} from "../../gen/floworchestrator/telemetry/v1/telemetry_pb.js";
import {
  TelemetryService,
  type WatchHealthResponse,
  WatchHealthResponse_Type as WatchType,
} from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { clientFor, failureOf } from "../support/clients.js";
import { setHealth, startMesh, type TestMesh } from "../support/mesh.js";

const spans = new InMemorySpanExporter();
const logs = new InMemoryLogRecordExporter();
let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh(
    {},
    {
      spanProcessors: [new SimpleSpanProcessor(spans)],
      logRecordProcessors: [new SimpleLogRecordProcessor({ exporter: logs })],
    },
  );
});
afterAll(() => mesh.close());

const connect = () => clientFor(TelemetryService, "Connect over HTTP/1.1", mesh.url);
const grpc = () => clientFor(TelemetryService, "gRPC (h2c)", mesh.url);
const grpcWeb = () => clientFor(TelemetryService, "gRPC-Web over HTTP/1.1", mesh.url);
/** A metric name no other test uses. */
const unique = (prefix: string) => `${prefix}.m${randomUUID().replaceAll("-", "").slice(0, 12)}`;
const scrape = async () => (await fetch(`${mesh.url}/metrics`)).text();
const hex = (bytes: number) => randomBytes(bytes).toString("hex");

describe("RecordMetrics over the wire", () => {
  it("points from a Connect client and a gRPC client show on /metrics with their labels", async () => {
    const name = unique("importer.records");
    const point = {
      name,
      kind: MetricKind.COUNTER,
      value: 3,
      attributes: { format: "csv" },
      dimensions: { flowId: "FLOW-001", branchPath: "main.a", stepId: "2", version: "1.0.0" },
    };
    expect((await connect().recordMetrics({ points: [point] })).recordedCount).toBe(1);
    await grpc().recordMetrics({ points: [{ ...point, value: 4 }] });
    const prom = name.replaceAll(".", "_");
    const text = await scrape();
    expect(text).toContain(`# TYPE ${prom}_total counter`);
    expect(text).toMatch(
      new RegExp(
        `^${prom}_total\\{format="csv",flow_id="FLOW-001",branch_path="main.a",step_id="2",service_version="1.0.0"[^}]*\\} 7$`,
        "m",
      ),
    );
  });

  it("a bad name is INVALID_ARGUMENT with a BadRequest naming the field", async () => {
    const err = await failureOf(
      grpc().recordMetrics({ points: [{ name: "NoDots", kind: MetricKind.GAUGE, value: 1 }] }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    const fields = err.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field);
    expect(fields).toEqual(["points[0].name"]);
    expect(err.findDetails(ErrorDetailSchema)[0]?.code).toBe("DATA_ERROR.INVALID_ARGUMENT");
  });

  it("another kind for a known name is FAILED_PRECONDITION", async () => {
    const name = unique("exporter.sent");
    await connect().recordMetrics({ points: [{ name, kind: MetricKind.COUNTER, value: 1 }] });
    const err = await failureOf(
      connect().recordMetrics({ points: [{ name, kind: MetricKind.HISTOGRAM, value: 1 }] }),
    );
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.findDetails(ErrorDetailSchema)[0]?.code).toBe("DATA_ERROR.METRIC_CONFLICT");
  });

  it("the 1001st series of a metric is RESOURCE_EXHAUSTED; its first series keep counting", async () => {
    const name = unique("flow.step.completed");
    const step = (i: number) => ({
      name,
      kind: MetricKind.COUNTER,
      value: 1,
      dimensions: { stepId: String(i) },
    });
    await grpc().recordMetrics({ points: Array.from({ length: 1000 }, (_, i) => step(i)) });
    const err = await failureOf(grpc().recordMetrics({ points: [step(1000)] }));
    expect(err.code).toBe(Code.ResourceExhausted);
    await grpc().recordMetrics({ points: [step(0)] });
    const text = await scrape();
    const prom = `${name.replaceAll(".", "_")}_total`;
    expect(text).toMatch(new RegExp(`^${prom}\\{step_id="0"[^}]*\\} 2$`, "m"));
    expect(text).not.toContain(`${prom}{step_id="1000"`);
  });
});

describe("RecordSpans and EmitLogs over the wire", () => {
  it("a browser's span and the mesh's server span of its call are one trace", async () => {
    const traceId = hex(16);
    const browserSpan = hex(8);
    await clientFor(Health, "gRPC-Web over HTTP/1.1", mesh.url).check(
      {},
      { headers: { traceparent: `00-${traceId}-${browserSpan}-01` } },
    );
    const now = Date.now();
    const res = await grpcWeb().recordSpans({
      spans: [
        {
          traceId,
          spanId: browserSpan,
          name: "click import",
          startTime: timestampFromMs(now - 50),
          endTime: timestampFromMs(now),
          dimensions: { flowId: "FLOW-7" },
        },
      ],
    });
    expect(res).toMatchObject({ recordedCount: 1, notSampledCount: 0 });
    const trace = spans.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
    const server = trace.find((s) => s.name === "grpc.health.v1.Health/Check");
    const client = trace.find((s) => s.name === "click import");
    expect(client?.spanContext().spanId).toBe(browserSpan);
    expect(server?.parentSpanContext?.spanId).toBe(browserSpan);
    expect(client?.attributes["flow.id"]).toBe("FLOW-7");
  });

  it("log records reach the pipeline's log processors", async () => {
    const body = `row skipped ${randomUUID()}`;
    const traceId = hex(16);
    const spanId = hex(8);
    await grpcWeb().emitLogs({
      records: [
        { severity: LogSeverity.ERROR, body, traceId, spanId, dimensions: { stepId: "4" } },
      ],
    });
    const record = logs.getFinishedLogRecords().find((r) => r.body === body);
    expect(record?.severityText).toBe("ERROR");
    expect(record?.spanContext).toMatchObject({ traceId, spanId });
    expect(record?.attributes["step.id"]).toBe("4");
  });
});

describe("GetHealth and WatchHealth over the wire", () => {
  it("GetHealth lists every service, the backends with their last check", async () => {
    const res = await grpc().getHealth({});
    expect(res.status).toBe(ServingStatus.SERVING);
    const names = res.components.map((c) => c.name);
    expect(names).toContain("floworchestrator.telemetry.v1.TelemetryService");
    const ds = res.components.find(
      (c) => c.name === "floworchestrator.datastore.v1.DataStoreService",
    );
    expect(ds?.status).toBe(ServingStatus.SERVING);
    expect(ds?.lastCheckTime).toBeDefined();
    expect(ds?.lastCheckLatency).toBeDefined();
  });

  it("WatchHealth streams a snapshot, then a component's change", async () => {
    const abort = new AbortController();
    const events = connect().watchHealth({}, { signal: abort.signal })[Symbol.asyncIterator]();
    const next = async (): Promise<WatchHealthResponse> => {
      for (;;) {
        const item = await events.next();
        if (item.done) throw new Error("stream ended");
        if (item.value.type !== WatchType.HEARTBEAT) return item.value;
      }
    };
    const name = `test.Backend${randomUUID().slice(0, 8)}`;
    try {
      const snapshot = await next();
      expect(snapshot.type).toBe(WatchType.SNAPSHOT);
      expect(snapshot.components.length).toBeGreaterThan(0);
      await setHealth(mesh, name, "NOT_SERVING");
      const down = await next();
      expect(down).toMatchObject({ type: WatchType.CHANGED, status: ServingStatus.NOT_SERVING });
      expect(down.components.map((c) => [c.name, c.status])).toEqual([
        [name, ServingStatus.NOT_SERVING],
      ]);
      await setHealth(mesh, name, "SERVING");
      const up = await next();
      expect(up.status).toBe(ServingStatus.SERVING);
      expect(up.components.map((c) => [c.name, c.status])).toEqual([[name, ServingStatus.SERVING]]);
    } finally {
      abort.abort();
    }
  });
});
