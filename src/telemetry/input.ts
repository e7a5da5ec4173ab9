/**
 * Checks and conversions shared by RecordMetrics, RecordSpans and EmitLogs:
 * attributes (typed values for spans and logs, Prometheus labels for
 * metrics), the FlowOrchestrator dimensions, W3C trace and span ids and
 * timestamps. Checks return violations named by field path
 * (`points[2].attributes["k"]`), as `common/validate.ts` does.
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Attributes, HrTime, AttributeValue as OtelValue } from "@opentelemetry/api";
import type {
  AttributeValue,
  FlowDimensions,
} from "../../gen/floworchestrator/telemetry/v1/telemetry_pb.js";
import * as V from "../common/validate.js";
import { branchPathViolations } from "../memory/address.js";

type Violations = V.Violations;

/** Most items (points, spans, log records) one call may carry. */
export const MAX_ITEMS = 1000;
/** Most attributes one point, span, span event or log record may carry (dimensions aside). */
export const MAX_ATTRIBUTES = 32;
/** Longest metric label value. */
export const MAX_LABEL_VALUE = 256;
/** Longest string attribute value of a span, span event or log record. */
export const MAX_STRING_VALUE = 4096;

const v = (field: string, description: string): Violations => [{ field, description }];
const at = (field: string, key: string) => `${field}[${JSON.stringify(key)}]`;

/** The items of a request: 1 to MAX_ITEMS. */
export const itemsViolations = (field: string, items: ReadonlyArray<unknown>): Violations =>
  items.length === 0
    ? v(field, "must have at least one item")
    : V.maxItems(field, items, MAX_ITEMS);

/** Attribute name of each dimension. */
export const DIMENSION_KEYS = {
  flowId: "flow.id",
  branchPath: "branch.path",
  stepId: "step.id",
  serviceType: "service.type",
  version: "service.version",
} as const satisfies Record<keyof Omit<FlowDimensions, "$typeName" | "$unknown">, string>;

const DIMENSIONS = Object.entries(DIMENSION_KEYS) as ReadonlyArray<
  [keyof typeof DIMENSION_KEYS, string]
>;
const RESERVED_KEYS = new Set<string>(Object.values(DIMENSION_KEYS));

export const dimensionsViolations = (field: string, d: FlowDimensions | undefined): Violations =>
  d === undefined
    ? []
    : [
        ...(d.flowId === "" ? [] : V.identifier(`${field}.flow_id`, d.flowId)),
        ...(d.branchPath === "" ? [] : branchPathViolations(`${field}.branch_path`, d.branchPath)),
        ...(d.stepId === "" ? [] : V.identifier(`${field}.step_id`, d.stepId)),
        ...(d.serviceType === "" ? [] : V.typeName(`${field}.service_type`, d.serviceType)),
        ...(d.version === "" ? [] : V.semverVersion(`${field}.version`, d.version)),
      ];

/** The dimensions that are set, as attributes (`flow.id`…). */
export const dimensionAttributes = (d: FlowDimensions | undefined): Record<string, string> => {
  const out: Record<string, string> = {};
  if (d === undefined) return out;
  for (const [field, key] of DIMENSIONS) if (d[field] !== "") out[key] = d[field];
  return out;
};

// --- Typed attributes (spans, span events, log records) ---------------------------------

const ATTRIBUTE_KEY = /^[A-Za-z_][A-Za-z0-9_.\-/]{0,127}$/;

export const attributesViolations = (
  field: string,
  attributes: Readonly<Record<string, AttributeValue>>,
): Violations => {
  const entries = Object.entries(attributes);
  if (entries.length > MAX_ATTRIBUTES) return v(field, `at most ${MAX_ATTRIBUTES} attributes`);
  return entries.flatMap(([key, { value }]): Violations => {
    const f = at(field, key);
    if (!ATTRIBUTE_KEY.test(key))
      return v(
        f,
        "key must be 1-128 letters, digits, '_', '.', '-' or '/', starting with a letter or '_'",
      );
    if (RESERVED_KEYS.has(key)) return v(f, "is a dimension: set it in `dimensions`");
    switch (value.case) {
      case undefined:
        return v(f, "needs a value");
      case "stringValue":
        return V.maxLength(f, value.value, MAX_STRING_VALUE);
      case "intValue":
        return value.value > BigInt(Number.MAX_SAFE_INTEGER) ||
          value.value < BigInt(Number.MIN_SAFE_INTEGER)
          ? v(f, "must be within ±(2^53 - 1); send larger integers as string_value")
          : [];
      case "doubleValue":
        return Number.isFinite(value.value) ? [] : v(f, "must be finite");
      default:
        return [];
    }
  });
};

const otelValue = ({ value }: AttributeValue): OtelValue | undefined => {
  switch (value.case) {
    case "intValue":
      return Number(value.value);
    case undefined:
      return undefined;
    default:
      return value.value;
  }
};

/** Checked attributes with the dimensions, as OpenTelemetry attributes. */
export const otelAttributes = (
  attributes: Readonly<Record<string, AttributeValue>>,
  dimensions: FlowDimensions | undefined,
): Attributes => {
  const out: Attributes = {};
  for (const [key, value] of Object.entries(attributes)) out[key] = otelValue(value);
  return { ...out, ...dimensionAttributes(dimensions) };
};

// --- Metric labels ----------------------------------------------------------------------

/** A name as the Prometheus exposition writes it (the exporter's own sanitizing). */
export const prometheusName = (name: string): string =>
  name.replace(/[^A-Za-z0-9_]/g, "_").replace(/_{2,}/g, "_");

const LABEL_KEY = /^[A-Za-z_][A-Za-z0-9_.]{0,127}$/;
const DIMENSION_LABELS = new Map<string, string>(
  Object.values(DIMENSION_KEYS).map((key) => [prometheusName(key), key]),
);

/**
 * Metric attributes become Prometheus labels: keys must stay distinct once
 * sanitized, and must not be labels the exposition adds itself (`le` of
 * histogram buckets, `quantile`, `otel_scope_*`).
 */
export const labelsViolations = (
  field: string,
  attributes: Readonly<Record<string, string>>,
): Violations => {
  const entries = Object.entries(attributes);
  if (entries.length > MAX_ATTRIBUTES) return v(field, `at most ${MAX_ATTRIBUTES} attributes`);
  const seen = new Map(DIMENSION_LABELS);
  return entries.flatMap(([key, value]): Violations => {
    const f = at(field, key);
    if (!LABEL_KEY.test(key))
      return v(f, "key must be 1-128 letters, digits, '_' or '.', starting with a letter or '_'");
    if (RESERVED_KEYS.has(key)) return v(f, "is a dimension: set it in `dimensions`");
    const label = prometheusName(key);
    if (label === "le" || label === "quantile" || label.startsWith("otel_"))
      return v(f, `is the Prometheus label "${label}" the exposition sets itself`);
    const other = seen.get(label);
    if (other !== undefined) return v(f, `is the same Prometheus label "${label}" as "${other}"`);
    seen.set(label, key);
    return V.label(f, value, MAX_LABEL_VALUE, false);
  });
};

// --- Ids and times -----------------------------------------------------------------------

const TRACE_ID = /^[0-9a-f]{32}$/;
const SPAN_ID = /^[0-9a-f]{16}$/;
const ZERO = /^0+$/;

export const traceIdViolations = (field: string, id: string): Violations =>
  !TRACE_ID.test(id)
    ? v(field, "must be 32 lowercase hex digits")
    : ZERO.test(id)
      ? v(field, "must not be all zero")
      : [];

export const spanIdViolations = (field: string, id: string): Violations =>
  !SPAN_ID.test(id)
    ? v(field, "must be 16 lowercase hex digits")
    : ZERO.test(id)
      ? v(field, "must not be all zero")
      : [];

/** 9999-12-31T23:59:59Z. */
const MAX_SECONDS = 253402300799n;

export const timestampViolations = (
  field: string,
  time: Timestamp | undefined,
  required: boolean,
): Violations => {
  if (time === undefined) return required ? v(field, "is required") : [];
  if (time.seconds <= 0n || time.seconds > MAX_SECONDS)
    return v(field, "must be after 1970-01-01T00:00:00Z and before the year 10000");
  if (time.nanos < 0 || time.nanos > 999_999_999) return v(field, "nanos must be 0-999999999");
  return [];
};

export const hrTime = (time: Timestamp): HrTime => [Number(time.seconds), time.nanos];

/** Negative when a is before b. */
export const compareTimes = (a: Timestamp, b: Timestamp): number =>
  a.seconds === b.seconds ? a.nanos - b.nanos : a.seconds < b.seconds ? -1 : 1;
