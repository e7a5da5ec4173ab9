/**
 * RecordMetrics: client metric points recorded on the mesh's meter, so they
 * reach Prometheus (`/metrics`) and OTLP like the mesh's own metrics.
 *
 * One instrument per metric name, created on its first point with that
 * point's kind, unit, description and bucket bounds, which the name then
 * keeps: another kind, unit or bounds later is FAILED_PRECONDITION (the
 * request is well-formed, it conflicts with what the mesh already holds),
 * as is a name whose Prometheus series names clash with another metric's
 * (`a.b_c` and `a_b.c` are both `a_b_c`; a gauge `x.count` and a histogram
 * `x` both write `x_count`).
 *
 * Limits, counted over the life of the mesh (an SDK never forgets a
 * series): at most `maxSeriesPerMetric` distinct attribute sets per metric
 * and `maxMetrics` client metrics. A point that would add one more is
 * RESOURCE_EXHAUSTED; points of series that already exist keep being
 * recorded.
 *
 * A call is all or nothing: every point is checked and every limit applied
 * before any point is recorded, in one synchronous step so concurrent calls
 * cannot both take the last free series.
 */
import type { Attributes, Meter } from "@opentelemetry/api";
import { Effect } from "effect";
import {
  MetricKind,
  type MetricPoint,
} from "../../gen/floworchestrator/telemetry/v1/telemetry_pb.js";
import { FailedPrecondition, type InvalidArgument, ResourceExhausted } from "../common/errors.js";
import * as V from "../common/validate.js";
import {
  dimensionAttributes,
  dimensionsViolations,
  itemsViolations,
  labelsViolations,
  MAX_ITEMS,
  prometheusName,
} from "./input.js";

export interface MetricLimits {
  /** Distinct attribute sets one metric may have. */
  readonly maxSeriesPerMetric: number;
  /** Distinct metric names clients may create. */
  readonly maxMetrics: number;
}

export const DEFAULT_METRIC_LIMITS: MetricLimits = { maxSeriesPerMetric: 1000, maxMetrics: 500 };

const NAME = /^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$/;
const MAX_NAME_LENGTH = 255;
/** Prometheus names of the mesh's own metrics (`rpc_server_*`, the SDK's `otel_*`, `target_info`). */
const RESERVED_PREFIXES = ["rpc_", "otel_", "target_info"];
const UNIT = /^[\x21-\x7e]{0,63}$/;
const MAX_DESCRIPTION = 1023;
const MAX_BOUNDARIES = 64;

const kindNames: Record<MetricKind, string> = {
  [MetricKind.UNSPECIFIED]: "unspecified",
  [MetricKind.COUNTER]: "counter",
  [MetricKind.GAUGE]: "gauge",
  [MetricKind.HISTOGRAM]: "histogram",
};
const kindName = (kind: MetricKind) => kindNames[kind] ?? `kind ${kind}`;

const v = (field: string, description: string): V.Violations => [{ field, description }];

const nameViolations = (field: string, name: string): V.Violations => {
  if (name.length > MAX_NAME_LENGTH)
    return v(field, `must be at most ${MAX_NAME_LENGTH} characters`);
  if (!NAME.test(name))
    return v(
      field,
      "must be a dotted hierarchical name such as flow.execution.duration: at least two " +
        "segments of lowercase letters, digits and '_', starting with a letter",
    );
  const base = prometheusName(name);
  if (RESERVED_PREFIXES.some((p) => base.startsWith(p)))
    return v(field, `is reserved for the mesh's own metrics (${RESERVED_PREFIXES.join(", ")}…)`);
  return [];
};

const pointViolations = (field: string, p: MetricPoint): V.Violations => {
  const kindKnown = p.kind in kindNames && p.kind !== MetricKind.UNSPECIFIED;
  return [
    ...nameViolations(`${field}.name`, p.name),
    ...(kindKnown ? [] : v(`${field}.kind`, "must be COUNTER, GAUGE or HISTOGRAM")),
    ...(!Number.isFinite(p.value)
      ? v(`${field}.value`, "must be finite")
      : p.value < 0 && (p.kind === MetricKind.COUNTER || p.kind === MetricKind.HISTOGRAM)
        ? v(`${field}.value`, `must not be negative for a ${kindName(p.kind)}`)
        : []),
    ...(UNIT.test(p.unit)
      ? []
      : v(`${field}.unit`, "must be at most 63 printable ASCII characters")),
    ...V.label(`${field}.description`, p.description, MAX_DESCRIPTION, false),
    ...labelsViolations(`${field}.attributes`, p.attributes),
    ...dimensionsViolations(`${field}.dimensions`, p.dimensions),
    ...boundariesViolations(`${field}.bucket_boundaries`, p),
  ];
};

const boundariesViolations = (field: string, p: MetricPoint): V.Violations => {
  const bounds = p.bucketBoundaries;
  if (bounds.length === 0) return [];
  if (p.kind !== MetricKind.HISTOGRAM) return v(field, "only histograms have buckets");
  if (bounds.length > MAX_BOUNDARIES) return v(field, `at most ${MAX_BOUNDARIES} bounds`);
  if (!bounds.every(Number.isFinite)) return v(field, "must be finite");
  if (!bounds.every((b, i) => i === 0 || b > (bounds[i - 1] as number)))
    return v(field, "must be strictly increasing");
  return [];
};

/** The series names a metric writes in the Prometheus exposition. */
const expositionNames = (name: string, kind: MetricKind): ReadonlyArray<string> => {
  const base = prometheusName(name);
  switch (kind) {
    case MetricKind.COUNTER:
      return [base.endsWith("_total") ? base : `${base}_total`];
    case MetricKind.HISTOGRAM:
      return [base, `${base}_count`, `${base}_sum`, `${base}_bucket`];
    default:
      return [base];
  }
};

/** One series: its attribute set, order-independent. */
const seriesKey = (attributes: Readonly<Record<string, string>>): string =>
  JSON.stringify(Object.entries(attributes).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

interface Definition {
  readonly name: string;
  readonly kind: MetricKind;
  readonly unit: string;
  readonly description: string;
  /** Empty: the SDK's default bounds. */
  readonly boundaries: ReadonlyArray<number>;
}

interface Metric extends Definition {
  readonly series: Set<string>;
  readonly record: (value: number, attributes: Attributes) => void;
}

const sameBounds = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

const conflict = (message: string, metric: string, field: string) =>
  new FailedPrecondition({
    message,
    code: "DATA_ERROR.METRIC_CONFLICT",
    metadata: { metric, field },
  });

export const makeMetricRecorder = (meter: Meter, limits: MetricLimits) => {
  const metrics = new Map<string, Metric>();
  /** Prometheus series name → the metric that writes it. */
  const expositionOwners = new Map<string, string>();

  const create = (d: Definition): Metric => {
    const options = { description: d.description, unit: d.unit };
    const series = new Set<string>();
    switch (d.kind) {
      case MetricKind.COUNTER: {
        const counter = meter.createCounter(d.name, options);
        return { ...d, series, record: (value, attrs) => counter.add(value, attrs) };
      }
      case MetricKind.GAUGE: {
        const gauge = meter.createGauge(d.name, options);
        return { ...d, series, record: (value, attrs) => gauge.record(value, attrs) };
      }
      default: {
        const histogram = meter.createHistogram(d.name, {
          ...options,
          ...(d.boundaries.length > 0
            ? { advice: { explicitBucketBoundaries: [...d.boundaries] } }
            : {}),
        });
        return { ...d, series, record: (value, attrs) => histogram.record(value, attrs) };
      }
    }
  };

  /** Applies every limit to the checked points, then records them all, or fails with none recorded. */
  const apply = (
    points: ReadonlyArray<MetricPoint>,
  ): Effect.Effect<number, FailedPrecondition | ResourceExhausted> =>
    Effect.suspend((): Effect.Effect<number, FailedPrecondition | ResourceExhausted> => {
      const defined = new Map<string, Definition>();
      const owners = new Map<string, string>();
      const added = new Map<string, Set<string>>();
      const planned: Array<{ readonly name: string; readonly attributes: Record<string, string> }> =
        [];
      for (const [i, p] of points.entries()) {
        const field = `points[${i}]`;
        const known = metrics.get(p.name) ?? defined.get(p.name);
        if (known !== undefined) {
          if (known.kind !== p.kind)
            return Effect.fail(
              conflict(
                `metric "${p.name}" is a ${kindName(known.kind)}; ${field} records it as a ${kindName(p.kind)}`,
                p.name,
                `${field}.kind`,
              ),
            );
          if (known.unit !== p.unit)
            return Effect.fail(
              conflict(
                `metric "${p.name}" has unit "${known.unit}"; ${field} gives "${p.unit}"`,
                p.name,
                `${field}.unit`,
              ),
            );
          if (p.bucketBoundaries.length > 0 && !sameBounds(known.boundaries, p.bucketBoundaries))
            return Effect.fail(
              conflict(
                `histogram "${p.name}" has other bucket bounds than ${field} gives`,
                p.name,
                `${field}.bucket_boundaries`,
              ),
            );
        } else {
          if (metrics.size + defined.size >= limits.maxMetrics)
            return Effect.fail(
              new ResourceExhausted({
                message: `at most ${limits.maxMetrics} client metrics; ${field} would create "${p.name}"`,
                metadata: { metric: p.name, limit: String(limits.maxMetrics) },
              }),
            );
          for (const series of expositionNames(p.name, p.kind)) {
            const owner = expositionOwners.get(series) ?? owners.get(series);
            if (owner !== undefined && owner !== p.name)
              return Effect.fail(
                conflict(
                  `metric "${p.name}" would write the Prometheus series "${series}" of metric "${owner}"`,
                  p.name,
                  `${field}.name`,
                ),
              );
            owners.set(series, p.name);
          }
          defined.set(p.name, {
            name: p.name,
            kind: p.kind,
            unit: p.unit,
            description: p.description,
            boundaries: [...p.bucketBoundaries],
          });
        }
        const attributes = { ...p.attributes, ...dimensionAttributes(p.dimensions) };
        const key = seriesKey(attributes);
        const existing = metrics.get(p.name)?.series;
        if (!existing?.has(key)) {
          const fresh = added.get(p.name) ?? new Set<string>();
          if (!fresh.has(key)) {
            if ((existing?.size ?? 0) + fresh.size >= limits.maxSeriesPerMetric)
              return Effect.fail(
                new ResourceExhausted({
                  message:
                    `metric "${p.name}" has its ${limits.maxSeriesPerMetric} series; ` +
                    `${field} would add another (existing series can still be recorded)`,
                  metadata: { metric: p.name, limit: String(limits.maxSeriesPerMetric) },
                }),
              );
            fresh.add(key);
            added.set(p.name, fresh);
          }
        }
        planned.push({ name: p.name, attributes });
      }

      for (const d of defined.values()) metrics.set(d.name, create(d));
      for (const [series, owner] of owners) expositionOwners.set(series, owner);
      for (const [name, keys] of added) {
        const series = metrics.get(name)?.series;
        for (const key of keys) series?.add(key);
      }
      for (const [i, { name, attributes }] of planned.entries()) {
        metrics.get(name)?.record((points[i] as MetricPoint).value, attributes);
      }
      return Effect.succeed(points.length);
    });

  return {
    /** Records every point, or none: InvalidArgument, FailedPrecondition, ResourceExhausted. */
    record: (
      points: ReadonlyArray<MetricPoint>,
    ): Effect.Effect<number, InvalidArgument | FailedPrecondition | ResourceExhausted> =>
      V.check(
        itemsViolations("points", points),
        ...points.slice(0, MAX_ITEMS).map((p, i) => pointViolations(`points[${i}]`, p)),
      ).pipe(Effect.zipRight(apply(points))),
  };
};
