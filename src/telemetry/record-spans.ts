/**
 * RecordSpans: finished client spans recorded through the mesh's tracer
 * provider, so they go to the same span processors and exporters as the
 * mesh's own spans and join their traces there.
 *
 * The SDK cannot import a finished span, so each is started and ended again
 * with its own times, attributes, events and status, under a parent context
 * built from its trace id and parent span id. Its span id (and, for a root
 * span, its trace id) are the client's: the provider's id generator hands
 * them out while the span starts (`span-ids.ts`).
 *
 * Sampling: a span with a parent is recorded whenever the mesh's sampler
 * honours a sampled remote parent (the default parent-based samplers do):
 * the client decided to keep the trace. A root span follows the sampler's
 * decision for its trace id.
 */
import {
  SpanKind as OtelSpanKind,
  SpanStatusCode as OtelStatus,
  ROOT_CONTEXT,
  TraceFlags,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { Effect } from "effect";
import {
  type Span,
  SpanKind,
  SpanStatusCode,
} from "../../gen/floworchestrator/telemetry/v1/telemetry_pb.js";
import type { InvalidArgument } from "../common/errors.js";
import * as V from "../common/validate.js";
import {
  attributesViolations,
  compareTimes,
  dimensionsViolations,
  hrTime,
  itemsViolations,
  MAX_ITEMS,
  otelAttributes,
  spanIdViolations,
  timestampViolations,
  traceIdViolations,
} from "./input.js";
import type { ClientSpanIds } from "./span-ids.js";

const MAX_NAME = 1024;
const MAX_EVENTS = 128;

const kinds: Record<SpanKind, OtelSpanKind> = {
  [SpanKind.UNSPECIFIED]: OtelSpanKind.INTERNAL,
  [SpanKind.INTERNAL]: OtelSpanKind.INTERNAL,
  [SpanKind.SERVER]: OtelSpanKind.SERVER,
  [SpanKind.CLIENT]: OtelSpanKind.CLIENT,
  [SpanKind.PRODUCER]: OtelSpanKind.PRODUCER,
  [SpanKind.CONSUMER]: OtelSpanKind.CONSUMER,
};
const statuses: Record<SpanStatusCode, OtelStatus> = {
  [SpanStatusCode.UNSPECIFIED]: OtelStatus.UNSET,
  [SpanStatusCode.OK]: OtelStatus.OK,
  [SpanStatusCode.ERROR]: OtelStatus.ERROR,
};

const v = (field: string, description: string): V.Violations => [{ field, description }];

const spanViolations = (field: string, s: Span): V.Violations => [
  ...traceIdViolations(`${field}.trace_id`, s.traceId),
  ...spanIdViolations(`${field}.span_id`, s.spanId),
  ...(s.parentSpanId === ""
    ? []
    : s.parentSpanId === s.spanId
      ? v(`${field}.parent_span_id`, "must not be the span's own id")
      : spanIdViolations(`${field}.parent_span_id`, s.parentSpanId)),
  ...V.label(`${field}.name`, s.name, MAX_NAME),
  ...(s.kind in kinds ? [] : v(`${field}.kind`, "is not a span kind")),
  ...timestampViolations(`${field}.start_time`, s.startTime, true),
  ...timestampViolations(`${field}.end_time`, s.endTime, true),
  ...(s.startTime && s.endTime && compareTimes(s.endTime, s.startTime) < 0
    ? v(`${field}.end_time`, "must not be before start_time")
    : []),
  ...attributesViolations(`${field}.attributes`, s.attributes),
  ...(s.status === undefined
    ? []
    : [
        ...(s.status.code in statuses ? [] : v(`${field}.status.code`, "is not a status code")),
        ...V.maxLength(`${field}.status.message`, s.status.message, 1024),
      ]),
  ...V.maxItems(`${field}.events`, s.events, MAX_EVENTS),
  ...s.events
    .slice(0, MAX_EVENTS)
    .flatMap((e, j) => [
      ...V.label(`${field}.events[${j}].name`, e.name, MAX_NAME),
      ...timestampViolations(`${field}.events[${j}].time`, e.time, true),
      ...attributesViolations(`${field}.events[${j}].attributes`, e.attributes),
    ]),
  ...dimensionsViolations(`${field}.dimensions`, s.dimensions),
];

const duplicateViolations = (spans: ReadonlyArray<Span>): V.Violations => {
  const seen = new Set<string>();
  return spans.flatMap((s, i) => {
    const key = `${s.traceId}/${s.spanId}`;
    if (seen.has(key)) return v(`spans[${i}].span_id`, "appears twice in the request");
    seen.add(key);
    return [];
  });
};

export interface SpanCounts {
  readonly recorded: number;
  readonly notSampled: number;
}

export const makeSpanRecorder = (tracer: Tracer, ids: ClientSpanIds) => {
  const recordOne = (s: Span): boolean => {
    const parent =
      s.parentSpanId === ""
        ? ROOT_CONTEXT
        : trace.setSpanContext(ROOT_CONTEXT, {
            traceId: s.traceId,
            spanId: s.parentSpanId,
            traceFlags: TraceFlags.SAMPLED,
            isRemote: true,
          });
    const span = ids.withIds({ traceId: s.traceId, spanId: s.spanId }, () =>
      tracer.startSpan(
        s.name,
        {
          kind: kinds[s.kind],
          startTime: hrTime(s.startTime as NonNullable<Span["startTime"]>),
          attributes: otelAttributes(s.attributes, s.dimensions),
        },
        parent,
      ),
    );
    if (!span.isRecording()) return false;
    for (const e of s.events) {
      span.addEvent(
        e.name,
        otelAttributes(e.attributes, undefined),
        hrTime(e.time as NonNullable<typeof e.time>),
      );
    }
    if (s.status !== undefined && s.status.code !== SpanStatusCode.UNSPECIFIED) {
      span.setStatus({
        code: statuses[s.status.code],
        ...(s.status.code === SpanStatusCode.ERROR ? { message: s.status.message } : {}),
      });
    }
    span.end(hrTime(s.endTime as NonNullable<Span["endTime"]>));
    return true;
  };

  return {
    /** Records every span (all are checked first). */
    record: (spans: ReadonlyArray<Span>): Effect.Effect<SpanCounts, InvalidArgument> =>
      V.check(
        itemsViolations("spans", spans),
        ...spans.slice(0, MAX_ITEMS).map((s, i) => spanViolations(`spans[${i}]`, s)),
        duplicateViolations(spans.slice(0, MAX_ITEMS)),
      ).pipe(
        Effect.zipRight(
          Effect.sync(() => {
            let recorded = 0;
            for (const s of spans) if (recordOne(s)) recorded++;
            return { recorded, notSampled: spans.length - recorded };
          }),
        ),
      ),
  };
};
