/**
 * The mesh's log lines also go to the OpenTelemetry logs pipeline (OTLP,
 * when configured), next to the JSON lines on stdout: same message, level,
 * annotations (including `trace_id` / `span_id` of the call, which also tie
 * the record to its trace) and cause.
 */
import { type LogAttributes, SeverityNumber } from "@opentelemetry/api-logs";
import { Cause, Effect, HashMap, Layer, Logger, type LogLevel } from "effect";
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

/** Adds the OpenTelemetry logger to the loggers of everything built on this layer. */
export const otelLogs = Layer.unwrapEffect(
  Effect.map(Telemetry, ({ loggerProvider }) => {
    const otel = loggerProvider.getLogger(INSTRUMENTATION_SCOPE);
    return Logger.add(
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
    );
  }),
);
