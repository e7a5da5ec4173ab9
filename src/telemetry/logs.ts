/**
 * The mesh's log lines also go to the OpenTelemetry logs pipeline (OTLP,
 * when configured), next to the JSON lines on stdout: same message, level,
 * annotations (including `trace_id` / `span_id` of the call, which also tie
 * the record to its trace) and cause.
 */
import { type LogAttributes, SeverityNumber } from "@opentelemetry/api-logs";
import {
  Cause,
  Context,
  Effect,
  FiberRef,
  FiberRefs,
  HashMap,
  Layer,
  Logger,
  type LogLevel,
  Option,
  Tracer,
} from "effect";
import { INSTRUMENTATION_SCOPE, Telemetry } from "./pipeline.js";

const severities: Record<LogLevel.LogLevel["_tag"], SeverityNumber> = {
  All: SeverityNumber.TRACE,
  Trace: SeverityNumber.TRACE,
  Debug: SeverityNumber.DEBUG,
  Info: SeverityNumber.INFO,
  Warning: SeverityNumber.WARN,
  Error: SeverityNumber.ERROR,
  Fatal: SeverityNumber.FATAL,
  None: SeverityNumber.UNSPECIFIED,
};

const text = (message: unknown): string => {
  const parts = Array.isArray(message) ? message : [message];
  return parts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join(" ");
};

/**
 * Tags a log line with the trace and span ids of the span it was written
 * under (the call's server span, or a backend span inside it), read when a
 * line is written rather than set on every call.
 */
export const withTraceIds = <M, O>(logger: Logger.Logger<M, O>): Logger.Logger<M, O> =>
  Logger.mapInputOptions(logger, (options) => {
    const span = Context.getOption(
      FiberRefs.getOrDefault(options.context, FiberRef.currentContext),
      Tracer.ParentSpan,
    );
    if (Option.isNone(span)) return options;
    return {
      ...options,
      annotations: options.annotations.pipe(
        HashMap.set("trace_id", span.value.traceId as unknown),
        HashMap.set("span_id", span.value.spanId as unknown),
      ),
    };
  });

/** JSON lines on stdout, as `Logger.json`, tagged with trace ids. */
export const jsonLogs: Layer.Layer<never> = Logger.replace(
  Logger.defaultLogger,
  withTraceIds(Logger.withConsoleLog(Logger.jsonLogger)),
);

/** Adds the OpenTelemetry logger to the loggers of everything built on this layer. */
export const otelLogs = Layer.unwrapEffect(
  Effect.map(Telemetry, ({ loggerProvider }) => {
    const otel = loggerProvider.getLogger(INSTRUMENTATION_SCOPE);
    return Logger.add(
      withTraceIds(
        Logger.make(({ logLevel, message, annotations, cause, date }) => {
          const attributes: LogAttributes = {};
          for (const [key, value] of HashMap.toEntries(annotations)) {
            attributes[key] = typeof value === "string" ? value : JSON.stringify(value);
          }
          if (!Cause.isEmpty(cause)) attributes["exception.message"] = Cause.pretty(cause);
          otel.emit({
            timestamp: date,
            severityNumber: severities[logLevel._tag],
            severityText: logLevel.label,
            body: text(message),
            attributes,
          });
        }),
      ),
    );
  }),
);
