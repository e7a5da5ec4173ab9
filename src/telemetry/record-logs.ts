/**
 * EmitLogs: client log records emitted on the mesh's logger provider, so
 * they go to the same processors and exporters (OTLP) as the mesh's own log
 * records. A record with a trace id and span id is tied to that span.
 */

import { ROOT_CONTEXT, TraceFlags, trace } from "@opentelemetry/api";
import type { Logger } from "@opentelemetry/api-logs";
import { SeverityNumber } from "@opentelemetry/api-logs";
import { Effect } from "effect";
import type { LogRecord } from "../../gen/floworchestrator/telemetry/v1/telemetry_pb.js";
import type { InvalidArgument } from "../common/errors.js";
import * as V from "../common/validate.js";
import {
  attributesViolations,
  dimensionsViolations,
  hrTime,
  itemsViolations,
  MAX_ITEMS,
  otelAttributes,
  spanIdViolations,
  timestampViolations,
  traceIdViolations,
} from "./input.js";

const MAX_BODY = 16_384;
const MAX_EVENT_NAME = 256;
/** OpenTelemetry's highest severity number (FATAL4). */
const MAX_SEVERITY = 24;

const v = (field: string, description: string): V.Violations => [{ field, description }];

const recordViolations = (field: string, r: LogRecord): V.Violations => [
  ...timestampViolations(`${field}.time`, r.time, false),
  ...(Number.isInteger(r.severity) && r.severity >= 0 && r.severity <= MAX_SEVERITY
    ? []
    : v(`${field}.severity`, `must be 0-${MAX_SEVERITY} (OpenTelemetry severity numbers)`)),
  ...V.maxLength(`${field}.body`, r.body, MAX_BODY),
  ...(r.body.includes("\u0000") ? v(`${field}.body`, "must not contain NUL") : []),
  ...attributesViolations(`${field}.attributes`, r.attributes),
  ...(r.traceId === "" && r.spanId === ""
    ? []
    : r.traceId === ""
      ? v(`${field}.trace_id`, "is required with span_id")
      : r.spanId === ""
        ? v(`${field}.span_id`, "is required with trace_id")
        : [
            ...traceIdViolations(`${field}.trace_id`, r.traceId),
            ...spanIdViolations(`${field}.span_id`, r.spanId),
          ]),
  ...dimensionsViolations(`${field}.dimensions`, r.dimensions),
  ...V.label(`${field}.event_name`, r.eventName, MAX_EVENT_NAME, false),
];

export const makeLogEmitter = (logger: Logger) => {
  const emitOne = (r: LogRecord) => {
    // Same numbers: LogSeverity names some of OpenTelemetry's, the rest arrive as numbers.
    const severity = r.severity as number as SeverityNumber;
    logger.emit({
      ...(r.time === undefined ? {} : { timestamp: hrTime(r.time) }),
      ...(severity === SeverityNumber.UNSPECIFIED
        ? {}
        : { severityNumber: severity, severityText: SeverityNumber[severity] }),
      body: r.body,
      attributes: otelAttributes(r.attributes, r.dimensions),
      ...(r.eventName === "" ? {} : { eventName: r.eventName }),
      context:
        r.traceId === ""
          ? ROOT_CONTEXT
          : trace.setSpanContext(ROOT_CONTEXT, {
              traceId: r.traceId,
              spanId: r.spanId,
              traceFlags: TraceFlags.SAMPLED,
              isRemote: true,
            }),
    });
  };

  return {
    /** Emits every record (all are checked first). */
    emit: (records: ReadonlyArray<LogRecord>): Effect.Effect<number, InvalidArgument> =>
      V.check(
        itemsViolations("records", records),
        ...records.slice(0, MAX_ITEMS).map((r, i) => recordViolations(`records[${i}]`, r)),
      ).pipe(
        Effect.zipRight(
          Effect.sync(() => {
            for (const r of records) emitOne(r);
            return records.length;
          }),
        ),
      ),
  };
};
