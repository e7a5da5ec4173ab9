/**
 * The MemoryManager answers the native gRPC path writes itself
 * (src/memory/wire.ts) are the bytes protobuf-es' `toBinary` writes for the
 * same answer, for any field values (random, boundary, any UTF-16 including
 * lone surrogates), and anything the fast path does not cover is left to
 * `toBinary`.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "@effect/vitest";
import fc from "fast-check";
import {
  AllocateResponseSchema,
  MemoryManagerService,
  ReadResponseSchema,
  WriteResponseSchema,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import {
  type MemoryEntry,
  MemoryEntrySchema,
} from "../../gen/floworchestrator/memory/v1/memory_pb.js";
import { encodeEntries } from "../../src/memory/wire.js";
import { int32, int64, secondsAndNanos, text } from "../support/wire-arbitraries.js";

const seconds = secondsAndNanos(-999_999_999);

const entry = fc
  .record({
    address: text,
    parts: fc.option(
      fc.record({
        executionId: text,
        flowId: text,
        stepType: fc.oneof(fc.constantFrom(0, 1, 2, 3), int32),
        branchPath: text,
        stepId: text,
        dataType: text,
        additionalInfo: text,
      }),
      { nil: undefined },
    ),
    owner: text,
    contentType: text,
    sizeBytes: int64,
    sizeLimitBytes: int64,
    version: int64,
    allocateTime: seconds,
    lastAccessTime: seconds,
    ttl: seconds,
    maxIdle: seconds,
    remainingTtl: seconds,
  })
  .map((e): MemoryEntry => create(MemoryEntrySchema, e));

const data = fc.oneof(
  fc.uint8Array({ maxLength: 40 }),
  fc.uint8Array({ minLength: 120, maxLength: 2000 }),
);

const { read, write, allocate } = MemoryManagerService.method;
const bytes = (b: Uint8Array | undefined) => (b === undefined ? undefined : [...b]);

describe("entries on the wire (native gRPC fast path)", () => {
  it("writes the bytes toBinary writes, for any Read, Write or Allocate answer", () => {
    fc.assert(
      fc.property(fc.option(entry, { nil: undefined }), data, (e, d) => {
        // As the handlers answer: plain objects around MemoryEntry messages.
        expect(bytes(encodeEntries(read, { data: d, entry: e }))).toEqual(
          bytes(toBinary(ReadResponseSchema, create(ReadResponseSchema, { data: d, entry: e }))),
        );
        expect(bytes(encodeEntries(write, { entry: e }))).toEqual(
          bytes(toBinary(WriteResponseSchema, create(WriteResponseSchema, { entry: e }))),
        );
        const made = create(AllocateResponseSchema, { entry: e });
        expect(bytes(encodeEntries(allocate, made))).toEqual(
          bytes(toBinary(AllocateResponseSchema, made)),
        );
      }),
      { numRuns: 300, seed: 20261208 },
    );
  });

  it("leaves other answers, init objects and unknown fields to toBinary", () => {
    const e = create(MemoryEntrySchema, {
      address: "a",
      parts: { executionId: "x" },
      ttl: { seconds: 1n },
    });
    expect(encodeEntries(MemoryManagerService.method.exists, { exists: true })).toBeUndefined();
    // An init object may lack fields: only a made entry is written here.
    expect(
      encodeEntries(read, { data: new Uint8Array(1), entry: { address: "a" } }),
    ).toBeUndefined();
    const unknown = [{ no: 99, wireType: 0, data: new Uint8Array([1]) }];
    for (const odd of [
      { ...e, $unknown: unknown },
      { ...e, parts: { ...e.parts, $unknown: unknown } },
      { ...e, ttl: { ...e.ttl, $unknown: unknown } },
    ]) {
      expect(encodeEntries(read, { entry: odd })).toBeUndefined();
    }
    expect(encodeEntries(read, { entry: e, $unknown: unknown })).toBeUndefined();
  });
});
