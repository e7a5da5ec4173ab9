/**
 * The Telemetry port implemented on the mesh's OpenTelemetry pipeline (the
 * `Telemetry` service): metrics on its meter, spans on its tracer provider,
 * logs on its logger provider; and the health registry for GetHealth and
 * WatchHealth.
 */
import { Effect, Layer } from "effect";
import { TelemetryService } from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import { HealthRegistry } from "../server/health.js";
import { getHealth, watchHealth } from "./health-view.js";
import { Telemetry } from "./pipeline.js";
import { makeLogEmitter } from "./record-logs.js";
import { DEFAULT_METRIC_LIMITS, type MetricLimits, makeMetricRecorder } from "./record-metrics.js";
import { makeSpanRecorder } from "./record-spans.js";
import { TelemetryPort } from "./TelemetryPort.js";

/**
 * Instrumentation scope of client spans and log records, so a backend can
 * tell them from the mesh's own. Client metrics are on the mesh's meter.
 */
export const CLIENT_SCOPE = TelemetryService.typeName;

export type TelemetryServiceOptions = Partial<MetricLimits>;

export const telemetryServiceLayer = (options: TelemetryServiceOptions = {}) =>
  Layer.effect(
    TelemetryPort,
    Effect.gen(function* () {
      const telemetry = yield* Telemetry;
      const health = yield* HealthRegistry;
      const metrics = makeMetricRecorder(telemetry.meter, { ...DEFAULT_METRIC_LIMITS, ...options });
      const spans = makeSpanRecorder(
        telemetry.tracerProvider.getTracer(CLIENT_SCOPE),
        telemetry.spanIds,
      );
      const logs = makeLogEmitter(telemetry.loggerProvider.getLogger(CLIENT_SCOPE));
      return {
        recordMetrics: (req) =>
          Effect.map(metrics.record(req.points), (recordedCount) => ({ recordedCount })),
        recordSpans: (req) =>
          Effect.map(spans.record(req.spans), (n) => ({
            recordedCount: n.recorded,
            notSampledCount: n.notSampled,
          })),
        emitLogs: (req) => Effect.map(logs.emit(req.records), (emittedCount) => ({ emittedCount })),
        getHealth: () => Effect.map(health.snapshot, getHealth),
        watchHealth: () => watchHealth(health),
      };
    }),
  );

export const TelemetryServiceLive = telemetryServiceLayer();
