/**
 * The mesh's OpenTelemetry pipeline, built with the OpenTelemetry JS SDK and
 * owned by one layer (so several meshes in one process never share global
 * state, and shutting the layer down flushes and stops every exporter):
 *
 * - traces: a tracer provider whose sampler comes from
 *   `OTEL_TRACES_SAMPLER` (parent-based always-on by default), exporting in
 *   batches over OTLP when an endpoint is configured;
 * - metrics: a meter provider read by the Prometheus exporter (served at
 *   `GET /metrics` on the mesh port, never on a port of its own) and, with
 *   an endpoint, exported periodically over OTLP;
 * - logs: a logger provider exporting over OTLP with an endpoint.
 *
 * Exporters run in the background with bounded queues (the SDK's batch
 * processors drop what does not fit): an unreachable collector never fails
 * an RPC nor grows memory without bound. Both batch processors take the
 * standard `OTEL_BSP_*` (spans, read by the SDK's processor) and
 * `OTEL_BLRP_*` (log records, read here: the SDK's log processor does not
 * read its own), and report their queue and what they dropped on the meter
 * provider (`otel.sdk.processor.*`), so an export that cannot keep up shows
 * on `/metrics`.
 */
import type { Meter, Tracer } from "@opentelemetry/api";
import { getNumberFromEnv, W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPLogExporter } from "@opentelemetry/exporter-logs-otlp-proto";
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-proto";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchLogRecordProcessor,
  LoggerProvider,
  type LogRecordProcessor,
} from "@opentelemetry/sdk-logs";
import { MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  type BufferConfig,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import { Context, Duration, Effect, Layer, Option } from "effect";
import { MeshConfig } from "../config.js";
import { ClientSpanIds } from "./span-ids.js";

export const INSTRUMENTATION_SCOPE = "floworchestrator-mesh";
/** Longest shutdown waits for the exporters' last flush. */
const SHUTDOWN_FLUSH = Duration.seconds(2);
const VERSION = "0.1.0";

export interface TelemetryShape {
  readonly tracerProvider: BasicTracerProvider;
  readonly tracer: Tracer;
  readonly meterProvider: MeterProvider;
  readonly meter: Meter;
  readonly loggerProvider: LoggerProvider;
  /** Serves the Prometheus text exposition of every metric. */
  readonly prometheus: PrometheusExporter;
  readonly propagator: W3CTraceContextPropagator;
  /** The tracer provider's id generator: lets RecordSpans keep a client span's ids. */
  readonly spanIds: ClientSpanIds;
  /**
   * Whether finished spans go anywhere (an OTLP endpoint, or processors a
   * test added). Without, work that only makes spans can be skipped.
   */
  readonly exportsSpans: boolean;
}

export class Telemetry extends Context.Tag("fo/Telemetry")<Telemetry, TelemetryShape>() {}

export interface TelemetryOptions {
  /** Extra span processors (tests add an in-memory exporter). */
  readonly spanProcessors?: ReadonlyArray<SpanProcessor>;
  /** Extra log record processors (tests add an in-memory exporter). */
  readonly logRecordProcessors?: ReadonlyArray<LogRecordProcessor>;
}

/**
 * The log batch processor's queue settings from the standard variables
 * (`OTEL_BLRP_MAX_QUEUE_SIZE`, `_MAX_EXPORT_BATCH_SIZE`, `_SCHEDULE_DELAY`,
 * `_EXPORT_TIMEOUT`, ms), read the way the SDK's span processor reads its
 * `OTEL_BSP_*` (a value that is not a number is ignored with a diagnostic);
 * unset ones keep the SDK's defaults (queue 2,048, batch 512).
 */
const logBatchSettings = () => {
  const settings: {
    maxQueueSize?: number;
    maxExportBatchSize?: number;
    scheduledDelayMillis?: number;
    exportTimeoutMillis?: number;
  } = {};
  const set = (key: keyof typeof settings, variable: string) => {
    const value = getNumberFromEnv(`OTEL_BLRP_${variable}`);
    if (value !== undefined) settings[key] = value;
  };
  set("maxQueueSize", "MAX_QUEUE_SIZE");
  set("maxExportBatchSize", "MAX_EXPORT_BATCH_SIZE");
  set("scheduledDelayMillis", "SCHEDULE_DELAY");
  set("exportTimeoutMillis", "EXPORT_TIMEOUT");
  return settings;
};

export const telemetryLayer = (options: TelemetryOptions = {}) =>
  Layer.scoped(
    Telemetry,
    Effect.gen(function* () {
      const { telemetry: config } = yield* MeshConfig;
      const endpoint = Option.getOrUndefined(config.otlpEndpoint);
      const otlp = endpoint !== undefined;
      const resource = resourceFromAttributes({
        [ATTR_SERVICE_NAME]: config.serviceName,
        [ATTR_SERVICE_VERSION]: VERSION,
      });
      const spanIds = new ClientSpanIds();
      const prometheus = new PrometheusExporter({ preventServerStart: true });
      // First: the batch processors below report their queues on it.
      const meterProvider = new MeterProvider({
        resource,
        readers: [
          prometheus,
          ...(otlp
            ? [
                new PeriodicExportingMetricReader({
                  exporter: new OTLPMetricExporter({ url: `${endpoint}/v1/metrics` }),
                  exportIntervalMillis: Duration.toMillis(config.metricExportInterval),
                  exportTimeoutMillis: Math.min(
                    30_000,
                    Duration.toMillis(config.metricExportInterval),
                  ),
                }),
              ]
            : []),
        ],
      });
      // The shim's option type does not list the (experimental) self-observability yet.
      const spanBatch = { selfObsMeterProvider: meterProvider } as BufferConfig;
      const tracerProvider = new BasicTracerProvider({
        resource,
        idGenerator: spanIds,
        spanProcessors: [
          ...(otlp
            ? [
                new BatchSpanProcessor(
                  new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }),
                  spanBatch,
                ),
              ]
            : []),
          ...(options.spanProcessors ?? []),
        ],
      });
      const loggerProvider = new LoggerProvider({
        resource,
        processors: [
          ...(otlp
            ? [
                new BatchLogRecordProcessor({
                  exporter: new OTLPLogExporter({ url: `${endpoint}/v1/logs` }),
                  ...logBatchSettings(),
                  selfObsMeterProvider: meterProvider,
                }),
              ]
            : []),
          ...(options.logRecordProcessors ?? []),
        ],
      });
      // Shutdown flushes what is queued; a collector that is down must not hold up the exit.
      yield* Effect.addFinalizer(() =>
        Effect.promise(() =>
          Promise.allSettled([
            tracerProvider.shutdown(),
            meterProvider.shutdown(),
            loggerProvider.shutdown(),
          ]),
        ).pipe(
          // Finalizers run uninterruptibly: let the timeout abandon the flush.
          Effect.interruptible,
          Effect.timeout(SHUTDOWN_FLUSH),
          Effect.ignore,
        ),
      );
      return {
        tracerProvider,
        tracer: tracerProvider.getTracer(INSTRUMENTATION_SCOPE, VERSION),
        meterProvider,
        meter: meterProvider.getMeter(INSTRUMENTATION_SCOPE, VERSION),
        loggerProvider,
        prometheus,
        propagator: new W3CTraceContextPropagator(),
        spanIds,
        exportsSpans: otlp || (options.spanProcessors ?? []).length > 0,
      };
    }),
  );
