/** Tier 1: how a memory record is read back from its JSON in the Hazelcast `meta` map. */
import { createRequire } from "node:module";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  asLong,
  json,
  NO_LIMIT,
  parse,
  type StoredMeta,
  splitMeta,
} from "../../src/memory/hazelcast/stored.js";
import type { MemoryRecord } from "../../src/memory/store.js";

const record = (owner: string, contentType: string): MemoryRecord => ({
  address: "e1:f1:PROCESS:main:s1:Data",
  executionId: "e1",
  flowId: "f1",
  stepType: "PROCESS",
  branchPath: "main",
  stepId: "s1",
  dataType: "Data",
  additionalInfo: "",
  owner,
  contentType,
  sizeBytes: 2,
  sizeLimitBytes: 0,
  version: 3,
  revision: 4,
  allocateTime: 1,
  lastWriteTime: 2,
  ttlMs: 60_000,
  maxIdleMs: 0,
  expireTime: 60_001,
});

describe("splitMeta", () => {
  it("gives the record apart from its inline bytes, for any field text", () => {
    // Quotes, backslashes and the very text that marks the bytes, inside the record's fields.
    const tricky = fc.oneof(
      fc.string(),
      fc.constantFrom(',"_inline":"', '\\",\\"_inline\\":\\"', "\\", '"}', "AQI="),
    );
    fc.assert(
      fc.property(tricky, tricky, fc.uint8Array({ maxLength: 64 }), (owner, type, bytes) => {
        const base64 = Buffer.from(bytes).toString("base64");
        const stored = { ...record(owner, type), _inline: base64 } satisfies StoredMeta;
        expect(splitMeta(json(stored))).toEqual({ meta: record(owner, type), inline: base64 });
      }),
    );
  });

  it("parses whole what it cannot split: bytes in `data`, `_inline` not last", () => {
    const inData = { ...record("o", "t"), _data: "key#1" } satisfies StoredMeta;
    expect(splitMeta(json(inData))).toEqual({ meta: inData, inline: undefined });
    const notLast = { _inline: "AQI=", ...record("o", "t") } satisfies StoredMeta;
    expect(splitMeta(json(notLast))).toEqual({ meta: record("o", "t"), inline: "AQI=" });
    const followed = { ...record("o", '"}'), _inline: "AQI=", tail: '"}' };
    expect(splitMeta(json(followed))).toEqual({
      meta: { ...record("o", '"}'), tail: '"}' },
      inline: "AQI=",
    });
  });

  it("refuses what is not a JSON value, as parse does", () => {
    expect(() => splitMeta("text")).toThrow(/expected a JSON value/);
    expect(() => parse("text")).toThrow(/expected a JSON value/);
  });
});

describe("asLong", () => {
  // The Long class the client's entry views carry, loaded as the client loads it.
  const require = createRequire(import.meta.url);
  const Long = createRequire(require.resolve("hazelcast-client"))("long") as {
    fromNumber: (n: number) => unknown;
    MAX_VALUE: unknown;
  };

  it("reads the client's Longs, numbers and their text alike", () => {
    fc.assert(
      fc.property(fc.integer({ min: -(2 ** 52), max: 2 ** 52 }), (n) => {
        expect(asLong(Long.fromNumber(n))).toBe(n);
        expect(asLong(n)).toBe(n);
        expect(asLong(String(n))).toBe(n);
      }),
    );
  });

  it("reads Hazelcast's forever as beyond every limit, and nonsense as none", () => {
    expect(asLong(Long.MAX_VALUE)).toBeGreaterThanOrEqual(NO_LIMIT);
    expect(asLong(undefined)).toBe(NO_LIMIT);
    expect(asLong("soon")).toBe(NO_LIMIT);
  });
});
