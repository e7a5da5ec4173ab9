/**
 * The Telemetry port on a real OpenTelemetry pipeline (no server): recorded
 * metrics in the Prometheus exposition with their dimension labels, the
 * series and metric limits, name and kind conflicts, client spans joining
 * their traces with their own ids, log records reaching a log processor,
 * and GetHealth / WatchHealth following the health registry.
 */
import { randomBytes } from "node:crypto";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "@effect/vitest";
import { SpanKind as OtelSpanKind, SpanStatusCode as OtelStatus } from "@opentelemetry/api";
import { SeverityNumber } from "@opentelemetry/api-logs";
import { PrometheusSerializer } from "@opentelemetry/exporter-prometheus";
import { InMemoryLogRecordExporter, SimpleLogRecordProcessor } from "@opentelemetry/sdk-logs";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { Chunk, Effect, Fiber, Layer, Option, Stream, TestClock } from "effect";
import {
  LogSeverity,
  MetricKind,
  ServingStatus,
  SpanKind,
  SpanStatusCode,
} from "../../gen/floworchestrator/telemetry/v1/telemetry_pb.js";
import {
  TelemetryService,
  WatchHealthResponse_Type as WatchType,
} from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import { defaultConfig, MeshConfig } from "../../src/config.js";
import { HealthRegistry, healthFromPing } from "../../src/server/health.js";
import { Telemetry, telemetryLayer } from "../../src/telemetry/pipeline.js";
import { CLIENT_SCOPE, telemetryServiceLayer } from "../../src/telemetry/service.js";
import { TelemetryPort } from "../../src/telemetry/TelemetryPort.js";
import { failure, invalid, portCaller } from "../support/port.js";

const { call, open } = portCaller(TelemetryService, TelemetryPort);

/** A fresh pipeline and service per test, with in-memory span and log exporters. */
const setup = (limits: { maxSeriesPerMetric?: number; maxMetrics?: number } = {}) => {
  const spans = new InMemorySpanExporter();
  const logs = new InMemoryLogRecordExporter();
  const layer = telemetryServiceLayer(limits).pipe(
    Layer.provideMerge(
      telemetryLayer({
        spanProcessors: [new SimpleSpanProcessor(spans)],
        logRecordProcessors: [new SimpleLogRecordProcessor({ exporter: logs })],
      }),
    ),
    Layer.provideMerge(HealthRegistry.Default),
    Layer.provide(Layer.succeed(MeshConfig, defaultConfig())),
  );
  return { spans, logs, layer };
};

/** The Prometheus text exposition, as `GET /metrics` serves it. */
const exposition = Effect.flatMap(Telemetry, ({ prometheus }) =>
  Effect.promise(async () => {
    const { resourceMetrics } = await prometheus.collect();
    return new PrometheusSerializer().serialize(resourceMetrics);
  }),
);

/** The value of the one sample of `name` whose labels include every one of `labels`. */
const sample = (text: string, name: string, labels: Record<string, string>): number | undefined => {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = m[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => have.includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return undefined;
};

const counter = (name: string, value: number, attributes: Record<string, string> = {}) => ({
  name,
  kind: MetricKind.COUNTER,
  value,
  attributes,
});

describe("RecordMetrics", () => {
  it.effect("a counter appears on /metrics with its attributes and dimensions as labels", () => {
    const { layer } = setup();
    return Effect.gen(function* () {
      const point = {
        name: "importer.records.imported",
        kind: MetricKind.COUNTER,
        value: 5,
        unit: "1",
        description: "Records imported",
        attributes: { "source.format": "csv" },
        dimensions: {
          flowId: "FLOW-001",
          branchPath: "main.a",
          stepId: "2",
          serviceType: "importer",
          version: "1.2.3",
        },
      };
      const res = yield* call("recordMetrics", { points: [point, { ...point, value: 2 }] });
      expect(res.recordedCount).toBe(2);
      const text = yield* exposition;
      expect(text).toContain("# TYPE importer_records_imported_total counter");
      expect(text).toContain("# HELP importer_records_imported_total Records imported");
      expect(
        sample(text, "importer_records_imported_total", {
          source_format: "csv",
          flow_id: "FLOW-001",
          branch_path: "main.a",
          step_id: "2",
          service_type: "importer",
          service_version: "1.2.3",
        }),
      ).toBe(7);
    }).pipe(Effect.provide(layer));
  });

  it.effect("a gauge keeps the last value; a histogram its buckets", () => {
    const { layer } = setup();
    return Effect.gen(function* () {
      yield* call("recordMetrics", {
        points: [
          { name: "memory.entries.current", kind: MetricKind.GAUGE, value: 10 },
          { name: "memory.entries.current", kind: MetricKind.GAUGE, value: -3 },
          {
            name: "flow.execution.duration",
            kind: MetricKind.HISTOGRAM,
            value: 0.3,
            unit: "s",
            bucketBoundaries: [0.5, 1, 5],
            dimensions: { flowId: "F1" },
          },
          {
            name: "flow.execution.duration",
            kind: MetricKind.HISTOGRAM,
            value: 2,
            unit: "s",
            dimensions: { flowId: "F1" },
          },
        ],
      });
      const text = yield* exposition;
      expect(text).toContain("# TYPE memory_entries_current gauge");
      expect(sample(text, "memory_entries_current", {})).toBe(-3);
      expect(text).toContain("# TYPE flow_execution_duration histogram");
      expect(sample(text, "flow_execution_duration_bucket", { flow_id: "F1", le: "0.5" })).toBe(1);
      expect(sample(text, "flow_execution_duration_bucket", { flow_id: "F1", le: "5" })).toBe(2);
      expect(sample(text, "flow_execution_duration_count", { flow_id: "F1" })).toBe(2);
    }).pipe(Effect.provide(layer));
  });

  it.effect(
    "a new series beyond the limit is RESOURCE_EXHAUSTED; existing series keep counting",
    () => {
      const { layer } = setup({ maxSeriesPerMetric: 3 });
      const name = "flow.step.completed";
      return Effect.gen(function* () {
        for (const step of ["1", "2", "3"]) {
          yield* call("recordMetrics", {
            points: [{ ...counter(name, 1), dimensions: { stepId: step } }],
          });
        }
        const err = yield* failure(
          call("recordMetrics", { points: [{ ...counter(name, 1), dimensions: { stepId: "4" } }] }),
          "ResourceExhausted",
        );
        expect(err.metadata).toMatchObject({ metric: name, limit: "3" });
        // All or nothing: a known series in the same call is not recorded either.
        yield* failure(
          call("recordMetrics", {
            points: [
              { ...counter(name, 1), dimensions: { stepId: "1" } },
              { ...counter(name, 1), dimensions: { stepId: "5" } },
            ],
          }),
          "ResourceExhausted",
        );
        yield* call("recordMetrics", {
          points: [{ ...counter(name, 1), dimensions: { stepId: "1" } }],
        });
        // Attribute order does not make another series.
        yield* call("recordMetrics", {
          points: [counter("flow.step.retried", 1, { a: "1", b: "2" })],
        });
        yield* call("recordMetrics", {
          points: [counter("flow.step.retried", 1, { b: "2", a: "1" })],
        });
        const text = yield* exposition;
        expect(sample(text, "flow_step_completed_total", { step_id: "1" })).toBe(2);
        expect(sample(text, "flow_step_completed_total", { step_id: "4" })).toBeUndefined();
        expect(sample(text, "flow_step_completed_total", { step_id: "5" })).toBeUndefined();
        expect(sample(text, "flow_step_retried_total", { a: "1", b: "2" })).toBe(2);
      }).pipe(Effect.provide(layer));
    },
  );

  it.effect("a new metric beyond the metric limit is RESOURCE_EXHAUSTED", () => {
    const { layer } = setup({ maxMetrics: 2 });
    return Effect.gen(function* () {
      yield* call("recordMetrics", { points: [counter("a.one", 1), counter("a.two", 1)] });
      yield* failure(
        call("recordMetrics", { points: [counter("a.three", 1)] }),
        "ResourceExhausted",
      );
      yield* call("recordMetrics", { points: [counter("a.two", 1)] });
    }).pipe(Effect.provide(layer));
  });

  it.effect("a name keeps its kind, unit and buckets; Prometheus names do not clash", () => {
    const { layer } = setup();
    return Effect.gen(function* () {
      yield* call("recordMetrics", {
        points: [
          { ...counter("exporter.bytes.sent", 1), unit: "By" },
          {
            name: "exporter.latency",
            kind: MetricKind.HISTOGRAM,
            value: 1,
            bucketBoundaries: [1, 2],
          },
        ],
      });
      const kind = yield* failure(
        call("recordMetrics", {
          points: [{ name: "exporter.bytes.sent", kind: MetricKind.GAUGE, value: 1, unit: "By" }],
        }),
        "FailedPrecondition",
      );
      expect(kind.message).toContain("is a counter");
      expect(kind.metadata).toMatchObject({ field: "points[0].kind" });
      yield* failure(
        call("recordMetrics", { points: [{ ...counter("exporter.bytes.sent", 1), unit: "kBy" }] }),
        "FailedPrecondition",
      );
      yield* failure(
        call("recordMetrics", {
          points: [
            {
              name: "exporter.latency",
              kind: MetricKind.HISTOGRAM,
              value: 1,
              bucketBoundaries: [1],
            },
          ],
        }),
        "FailedPrecondition",
      );
      // `exporter_bytes.sent` and a gauge `exporter.latency.count` would write series of others.
      yield* failure(
        call("recordMetrics", { points: [{ ...counter("exporter_bytes.sent", 1), unit: "By" }] }),
        "FailedPrecondition",
      );
      yield* failure(
        call("recordMetrics", {
          points: [{ name: "exporter.latency.count", kind: MetricKind.GAUGE, value: 1 }],
        }),
        "FailedPrecondition",
      );
      // Within one call, the first point of a new name defines it.
      yield* failure(
        call("recordMetrics", {
          points: [
            counter("fresh.metric", 1),
            { name: "fresh.metric", kind: MetricKind.GAUGE, value: 1 },
          ],
        }),
        "FailedPrecondition",
      );
      // Nothing of a failed call was defined: the name is still free.
      yield* call("recordMetrics", {
        points: [{ name: "fresh.metric", kind: MetricKind.GAUGE, value: 1 }],
      });
      const text = yield* exposition;
      expect(sample(text, "exporter_bytes_sent_total", {})).toBe(1);
    }).pipe(Effect.provide(layer));
  });

  it.effect(
    "bad names, values, attributes and dimensions are INVALID_ARGUMENT naming the field",
    () => {
      const { layer } = setup();
      return Effect.gen(function* () {
        const bad = (point: Record<string, unknown>, field: string) =>
          invalid(
            call("recordMetrics", {
              points: [counter("ok.metric", 1), { ...counter("ok.name", 1), ...point }],
            }),
            `points[1].${field}`,
          );
        for (const name of [
          "orders",
          "Orders.count",
          "orders..count",
          "orders.count.",
          "1orders.count",
          "orders-count.x",
          `a.${"b".repeat(254)}`,
          "rpc.server.duration",
          "rpc_server.duration",
          "otel.sdk.spans",
          "target.info",
        ]) {
          yield* bad({ name }, "name");
        }
        yield* bad({ kind: MetricKind.UNSPECIFIED }, "kind");
        yield* bad({ value: -1 }, "value");
        yield* bad({ value: Number.NaN }, "value");
        yield* bad({ value: Number.POSITIVE_INFINITY }, "value");
        yield* bad({ kind: MetricKind.HISTOGRAM, value: -0.5 }, "value");
        yield* bad({ unit: "milli seconds" }, "unit");
        yield* bad({ bucketBoundaries: [1, 2] }, "bucket_boundaries");
        yield* bad({ kind: MetricKind.HISTOGRAM, bucketBoundaries: [2, 1] }, "bucket_boundaries");
        yield* bad({ attributes: { "flow.id": "x" } }, 'attributes["flow.id"]');
        yield* bad({ attributes: { flow_id: "x" } }, 'attributes["flow_id"]');
        yield* bad({ attributes: { le: "1" } }, 'attributes["le"]');
        yield* bad({ attributes: { "otel.scope.name": "x" } }, 'attributes["otel.scope.name"]');
        yield* bad({ attributes: { "a-b": "x" } }, 'attributes["a-b"]');
        yield* bad({ attributes: { "a.b": "1", a_b: "2" } }, 'attributes["a_b"]');
        yield* bad({ attributes: { k: "v".repeat(257) } }, 'attributes["k"]');
        yield* bad(
          { attributes: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, "v"])) },
          "attributes",
        );
        yield* bad({ dimensions: { branchPath: "feature.a" } }, "dimensions.branch_path");
        yield* bad({ dimensions: { flowId: "a:b" } }, "dimensions.flow_id");
        yield* bad({ dimensions: { serviceType: "Importer" } }, "dimensions.service_type");
        yield* bad({ dimensions: { version: "v1" } }, "dimensions.version");
        yield* invalid(call("recordMetrics", { points: [] }), "points");
        yield* invalid(
          call("recordMetrics", { points: Array.from({ length: 1001 }, () => counter("a.b", 1)) }),
          "points",
        );
        // Every violation is named, and nothing of the call was recorded.
        const both = yield* invalid(
          call("recordMetrics", { points: [counter("bad", 1), counter("ok.x", -1)] }),
          "points[0].name",
          "points[1].value",
        );
        expect(both.violations).toHaveLength(2);
        expect(yield* exposition).not.toContain("ok_metric");
      }).pipe(Effect.provide(layer));
    },
  );
});

const hex = (bytes: number) => randomBytes(bytes).toString("hex");
const at = (ms: number) => timestampFromMs(ms);

describe("RecordSpans", () => {
  it.effect("spans join their trace with the client's trace, span and parent ids", () => {
    const { layer, spans } = setup();
    const traceId = hex(16);
    const rootId = hex(8);
    const childId = hex(8);
    const browserParent = hex(8);
    const t0 = Date.parse("2026-01-02T03:04:05.000Z");
    return Effect.gen(function* () {
      const res = yield* call("recordSpans", {
        spans: [
          {
            traceId,
            spanId: childId,
            parentSpanId: rootId,
            name: "transform rows",
            kind: SpanKind.INTERNAL,
            startTime: { seconds: BigInt(t0 / 1000 + 1), nanos: 250_000_123 },
            endTime: at(t0 + 2000),
            attributes: {
              rows: { value: { case: "intValue", value: 42n } },
              ratio: { value: { case: "doubleValue", value: 0.5 } },
              cached: { value: { case: "boolValue", value: true } },
            },
            status: { code: SpanStatusCode.ERROR, message: "2 rows rejected" },
            events: [
              {
                name: "retry",
                time: at(t0 + 1500),
                attributes: { attempt: { value: { case: "intValue", value: 2n } } },
              },
            ],
            dimensions: { flowId: "FLOW-1", branchPath: "main.b", stepId: "3" },
          },
          {
            traceId,
            spanId: rootId,
            parentSpanId: browserParent,
            name: "import customers.csv",
            kind: SpanKind.CLIENT,
            startTime: at(t0),
            endTime: at(t0 + 3000),
            attributes: { file: { value: { case: "stringValue", value: "customers.csv" } } },
          },
          {
            traceId: hex(16),
            spanId: hex(8),
            name: "a new trace",
            startTime: at(t0),
            endTime: at(t0),
          },
        ],
      });
      expect(res.recordedCount).toBe(3);
      expect(res.notSampledCount).toBe(0);
      const finished = spans.getFinishedSpans();
      const child = finished.find((s) => s.name === "transform rows");
      const root = finished.find((s) => s.name === "import customers.csv");
      expect(child?.spanContext()).toMatchObject({ traceId, spanId: childId });
      expect(child?.parentSpanContext).toMatchObject({ traceId, spanId: rootId });
      expect(root?.spanContext()).toMatchObject({ traceId, spanId: rootId });
      expect(root?.parentSpanContext?.spanId).toBe(browserParent);
      expect(root?.kind).toBe(OtelSpanKind.CLIENT);
      expect(child?.kind).toBe(OtelSpanKind.INTERNAL);
      expect(child?.startTime).toEqual([t0 / 1000 + 1, 250_000_123]);
      expect(child?.endTime).toEqual([t0 / 1000 + 2, 0]);
      expect(child?.attributes).toEqual({
        rows: 42,
        ratio: 0.5,
        cached: true,
        "flow.id": "FLOW-1",
        "branch.path": "main.b",
        "step.id": "3",
      });
      expect(child?.status).toEqual({ code: OtelStatus.ERROR, message: "2 rows rejected" });
      expect(child?.events).toMatchObject([
        { name: "retry", time: [t0 / 1000 + 1, 500_000_000], attributes: { attempt: 2 } },
      ]);
      expect(child?.instrumentationScope.name).toBe(CLIENT_SCOPE);
      const fresh = finished.find((s) => s.name === "a new trace");
      expect(fresh?.parentSpanContext).toBeUndefined();
      // Spans started afterwards get random ids again.
      const other = yield* Effect.map(Telemetry, (t) => t.tracer.startSpan("mesh work"));
      other.end();
      expect(other.spanContext().traceId).not.toBe(traceId);
      expect([rootId, childId]).not.toContain(other.spanContext().spanId);
    }).pipe(Effect.provide(layer));
  });

  it.effect("bad ids, times and duplicates are INVALID_ARGUMENT, and nothing is recorded", () => {
    const { layer, spans } = setup();
    const ok = () => ({
      traceId: hex(16),
      spanId: hex(8),
      name: "step",
      startTime: at(1_700_000_000_000),
      endTime: at(1_700_000_001_000),
    });
    return Effect.gen(function* () {
      const bad = (span: Record<string, unknown>, field: string) =>
        invalid(call("recordSpans", { spans: [ok(), { ...ok(), ...span }] }), `spans[1].${field}`);
      yield* bad({ traceId: "ABC" }, "trace_id");
      yield* bad({ traceId: "0".repeat(32) }, "trace_id");
      yield* bad({ traceId: hex(16).toUpperCase() }, "trace_id");
      yield* bad({ spanId: "" }, "span_id");
      yield* bad({ spanId: "0".repeat(16) }, "span_id");
      yield* bad({ parentSpanId: "xyz" }, "parent_span_id");
      yield* bad({ name: "" }, "name");
      yield* bad({ kind: 9 }, "kind");
      yield* bad({ startTime: undefined }, "start_time");
      yield* bad({ endTime: at(1_699_999_999_000) }, "end_time");
      yield* bad({ endTime: { seconds: 1_700_000_002n, nanos: 1_000_000_000 } }, "end_time");
      yield* bad({ attributes: { k: { value: { case: undefined } } } }, 'attributes["k"]');
      yield* bad(
        { attributes: { k: { value: { case: "intValue", value: 2n ** 60n } } } },
        'attributes["k"]',
      );
      yield* bad(
        { attributes: { "step.id": { value: { case: "stringValue", value: "1" } } } },
        'attributes["step.id"]',
      );
      yield* bad({ events: [{ name: "e" }] }, "events[0].time");
      yield* bad({ status: { code: 7 } }, "status.code");
      yield* bad({ dimensions: { stepId: "", branchPath: "x" } }, "dimensions.branch_path");
      const twice = ok();
      yield* invalid(call("recordSpans", { spans: [twice, { ...twice }] }), "spans[1].span_id");
      yield* invalid(call("recordSpans", { spans: [] }), "spans");
      expect(spans.getFinishedSpans()).toHaveLength(0);
    }).pipe(Effect.provide(layer));
  });
});

describe("EmitLogs", () => {
  it.effect("records reach the log processors with severity, attributes and their span", () => {
    const { layer, logs } = setup();
    const traceId = hex(16);
    const spanId = hex(8);
    return Effect.gen(function* () {
      const res = yield* call("emitLogs", {
        records: [
          {
            time: { seconds: 1_700_000_000n, nanos: 5 },
            severity: LogSeverity.WARN,
            body: "row 7 skipped:\n\tmissing id",
            attributes: { row: { value: { case: "intValue", value: 7n } } },
            traceId,
            spanId,
            dimensions: { flowId: "FLOW-9", serviceType: "importer" },
            eventName: "importer.row.skipped",
          },
          { body: "plain", severity: 10 as LogSeverity },
        ],
      });
      expect(res.emittedCount).toBe(2);
      const [first, second] = logs.getFinishedLogRecords();
      expect(first?.body).toBe("row 7 skipped:\n\tmissing id");
      expect(first?.severityNumber).toBe(SeverityNumber.WARN);
      expect(first?.severityText).toBe("WARN");
      expect(first?.hrTime).toEqual([1_700_000_000, 5]);
      expect(first?.attributes).toEqual({
        row: 7,
        "flow.id": "FLOW-9",
        "service.type": "importer",
      });
      expect(first?.spanContext).toMatchObject({ traceId, spanId });
      expect(first?.eventName).toBe("importer.row.skipped");
      expect(first?.instrumentationScope.name).toBe(CLIENT_SCOPE);
      expect(second?.severityNumber).toBe(SeverityNumber.INFO2);
      expect(second?.spanContext).toBeUndefined();
    }).pipe(Effect.provide(layer));
  });

  it.effect("bad records are INVALID_ARGUMENT naming the field", () => {
    const { layer, logs } = setup();
    return Effect.gen(function* () {
      const bad = (record: Record<string, unknown>, field: string) =>
        invalid(call("emitLogs", { records: [{ body: "ok" }, record] }), `records[1].${field}`);
      yield* bad({ spanId: hex(8) }, "trace_id");
      yield* bad({ traceId: hex(16) }, "span_id");
      yield* bad({ traceId: "nope", spanId: hex(8) }, "trace_id");
      yield* bad({ severity: 25 }, "severity");
      yield* bad({ body: "x".repeat(16_385) }, "body");
      yield* bad({ time: { seconds: -5n, nanos: 0 } }, "time");
      yield* bad({ eventName: "a\nb" }, "event_name");
      yield* invalid(call("emitLogs", { records: [] }), "records");
      expect(logs.getFinishedLogRecords()).toHaveLength(0);
    }).pipe(Effect.provide(layer));
  });
});

const DS = "floworchestrator.datastore.v1.DataStoreService";
const MB = "floworchestrator.messaging.v1.MessageBusService";

/** Lets forked fibers run up to their next wait. */
const settle = TestClock.adjust("1 millis");

describe("GetHealth and WatchHealth", () => {
  it.effect("GetHealth shows each component's status, last check and last error", () => {
    const { layer } = setup();
    return Effect.gen(function* () {
      const health = yield* HealthRegistry;
      yield* TestClock.setTime(Date.parse("2026-03-01T00:00:00Z"));
      yield* health.set("floworchestrator.telemetry.v1.TelemetryService", "SERVING");
      yield* health.report(DS, { status: "SERVING", latencyMs: 1.5 });
      yield* health.report(MB, {
        status: "NOT_SERVING",
        latencyMs: 2000,
        error: "backend unreachable",
      });
      let res = yield* call("getHealth", {});
      expect(res.status).toBe(ServingStatus.NOT_SERVING);
      expect(res.components.map((c) => c.name)).toEqual([
        DS,
        MB,
        "floworchestrator.telemetry.v1.TelemetryService",
      ]);
      const [ds, mb, ts] = res.components;
      expect(ds?.status).toBe(ServingStatus.SERVING);
      expect(ds?.lastCheckLatency).toMatchObject({ seconds: 0n, nanos: 1_500_000 });
      expect(ds?.lastCheckTime).toMatchObject({
        seconds: BigInt(Date.parse("2026-03-01T00:00:00Z") / 1000),
      });
      expect(ds?.lastError).toBe("");
      expect(ds?.lastErrorTime).toBeUndefined();
      expect(mb).toMatchObject({
        status: ServingStatus.NOT_SERVING,
        lastError: "backend unreachable",
      });
      expect(mb?.lastCheckLatency).toMatchObject({ seconds: 2n, nanos: 0 });
      expect(ts?.lastCheckTime).toBeUndefined();
      // Recovered: SERVING, and the last error is kept with its time.
      yield* TestClock.adjust("2 seconds");
      yield* health.report(MB, { status: "SERVING", latencyMs: 3 });
      res = yield* call("getHealth", {});
      expect(res.status).toBe(ServingStatus.SERVING);
      const recovered = res.components.find((c) => c.name === MB);
      expect(recovered?.status).toBe(ServingStatus.SERVING);
      expect(recovered?.lastError).toBe("backend unreachable");
      expect(
        Number(recovered?.lastCheckTime?.seconds) - Number(recovered?.lastErrorTime?.seconds),
      ).toBe(2);
      // The gRPC health view of the same registry.
      expect(yield* health.check(MB)).toEqual(Option.some("SERVING"));
    }).pipe(Effect.provide(layer));
  });

  it.effect("a failing ping reports NOT_SERVING with a generic error and its latency", () => {
    const { layer } = setup();
    const failing = healthFromPing(
      DS,
      Effect.fail(new Error("connect ECONNREFUSED 10.0.0.7:27017")).pipe(Effect.delay("40 millis")),
    );
    return Effect.gen(function* () {
      const res = yield* call("getHealth", {});
      const ds = res.components.find((c) => c.name === DS);
      expect(ds?.status).toBe(ServingStatus.NOT_SERVING);
      expect(ds?.lastError).toBe("backend unreachable");
      expect(ds?.lastCheckLatency).toMatchObject({ seconds: 0n, nanos: 40_000_000 });
    }).pipe(
      Effect.provide(Layer.provideMerge(failing, layer)),
      Effect.fork,
      Effect.tap(() => TestClock.adjust("50 millis")),
      Effect.flatMap(Fiber.join),
    );
  });

  it.effect("WatchHealth sends a snapshot, then changes, then heartbeats", () => {
    const { layer } = setup();
    return Effect.gen(function* () {
      const health = yield* HealthRegistry;
      yield* health.report(DS, { status: "SERVING", latencyMs: 1 });
      const seen = yield* open("watchHealth", {}).pipe(
        Stream.take(5),
        Stream.runCollect,
        Effect.fork,
      );
      yield* settle;
      yield* health.report(DS, { status: "SERVING", latencyMs: 7 }); // latency only: no event
      yield* settle;
      yield* health.report(DS, {
        status: "NOT_SERVING",
        latencyMs: 3000,
        error: "no answer within 3s",
      });
      yield* settle;
      yield* health.report(DS, {
        status: "NOT_SERVING",
        latencyMs: 3000,
        error: "no answer within 3s",
      });
      yield* settle;
      yield* health.report(DS, {
        status: "NOT_SERVING",
        latencyMs: 5,
        error: "backend unreachable",
      });
      yield* settle;
      yield* health.set(MB, "SERVING"); // a new component
      yield* settle;
      yield* TestClock.adjust("25 seconds");
      const events = Chunk.toArray(yield* Fiber.join(seen));
      expect(events.map((e) => e.type)).toEqual([
        WatchType.SNAPSHOT,
        WatchType.CHANGED,
        WatchType.CHANGED,
        WatchType.CHANGED,
        WatchType.HEARTBEAT,
      ]);
      const [snapshot, down, otherError, added, heartbeat] = events;
      expect(snapshot?.status).toBe(ServingStatus.SERVING);
      expect(snapshot?.components.map((c) => [c.name, c.status])).toEqual([
        [DS, ServingStatus.SERVING],
      ]);
      expect(down?.status).toBe(ServingStatus.NOT_SERVING);
      expect(down?.components).toMatchObject([
        { name: DS, status: ServingStatus.NOT_SERVING, lastError: "no answer within 3s" },
      ]);
      expect(otherError?.components).toMatchObject([
        { name: DS, lastError: "backend unreachable" },
      ]);
      expect(added?.components.map((c) => c.name)).toEqual([MB]);
      expect(heartbeat).toMatchObject({ status: ServingStatus.NOT_SERVING, components: [] });
      expect(heartbeat?.time).toBeDefined();
    }).pipe(Effect.provide(layer));
  });
});
