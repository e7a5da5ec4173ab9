/**
 * The metrics SDK as patched in `patches/`: a frozen attribute set of
 * primitives is hashed once and remembered, and every other attribute set is
 * hashed on each record as before.
 */
import { createRequire } from "node:module";
import { describe, expect, it } from "@effect/vitest";
import type { Histogram } from "@opentelemetry/api";
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";

const require = createRequire(import.meta.url);
const { hashAttributes } = require("@opentelemetry/sdk-metrics/build/src/utils.js") as {
  hashAttributes: (attributes: Record<string, unknown>) => string;
};

const collect = async (record: (h: Histogram) => void) => {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 });
  const provider = new MeterProvider({ readers: [reader] });
  record(provider.getMeter("test").createHistogram("h"));
  await reader.forceFlush();
  await provider.shutdown();
  const points = exporter.getMetrics()[0]?.scopeMetrics[0]?.metrics[0]?.dataPoints ?? [];
  return points.map((p) => ({
    attributes: p.attributes,
    count: (p.value as { count: number }).count,
  }));
};

describe("metrics attribute hashing (patched)", () => {
  it("hashes a frozen set as it hashes the same unfrozen set, in any key order", () => {
    const frozen = Object.freeze({ b: 2, a: "x", c: true });
    expect(hashAttributes(frozen)).toBe(hashAttributes({ a: "x", b: 2, c: true }));
    expect(hashAttributes(frozen)).toBe(hashAttributes(frozen));
    expect(hashAttributes(Object.freeze({}))).toBe("");
  });

  it("reads a frozen set of primitives once, however often it is hashed", () => {
    let reads = 0;
    const frozen = Object.freeze({
      get method() {
        reads++;
        return "Read";
      },
    });
    const first = hashAttributes(frozen);
    expect(hashAttributes(frozen)).toBe(first);
    expect(hashAttributes(frozen)).toBe(first);
    // Read twice at the first hash (to serialize it, then to see it is a primitive), never again.
    expect(reads).toBe(2);
  });

  it("hashes a frozen set holding an array again after the array changed", () => {
    const list = ["a"];
    const frozen = Object.freeze({ k: list });
    const before = hashAttributes(frozen);
    list.push("b");
    expect(hashAttributes(frozen)).not.toBe(before);
  });

  it("keeps every series apart and joins equal sets, frozen or not", async () => {
    const frozen = Object.freeze({ method: "Read", code: 0 });
    const points = await collect((h) => {
      h.record(1, frozen);
      h.record(2, { code: 0, method: "Read" });
      h.record(3, { method: "Read", code: 5 });
      h.record(4, Object.freeze({ method: "Read", code: 14 }));
      h.record(5, frozen);
    });
    const byCode = Object.fromEntries(points.map((p) => [p.attributes.code, p.count]));
    expect(byCode).toEqual({ 0: 3, 5: 1, 14: 1 });
  });
});
