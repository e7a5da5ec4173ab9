/**
 * The MemoryManager answers that carry an entry, written straight to the
 * protobuf wire (src/common/wire.ts) for the native gRPC path: a Read is
 * the busiest call, and `toBinary` of its answer (17 fields of an entry
 * walked by reflection) cost 3-5 µs of CPU more per Read on Hazelcast.
 * test/unit/memory-wire.test.ts holds the bytes to `toBinary`'s.
 *
 * Only messages without unknown fields are written here; anything else is
 * left to `toBinary` (the caller gets `undefined`).
 */
import type { DescMethod } from "@bufbuild/protobuf";
import type { MemoryEntry } from "../../gen/floworchestrator/memory/v1/memory_pb.js";
import { encode, type Sink, timestamp } from "../common/wire.js";

const service = "floworchestrator.memory.v1.";

const entry = (s: Sink, e: MemoryEntry) => {
  s.string(1, e.address);
  const p = e.parts;
  if (p !== undefined)
    s.message(2, () => {
      s.string(1, p.executionId);
      s.string(2, p.flowId);
      s.int32(3, p.stepType);
      s.string(4, p.branchPath);
      s.string(5, p.stepId);
      s.string(6, p.dataType);
      s.string(7, p.additionalInfo);
    });
  s.string(3, e.owner);
  s.string(4, e.contentType);
  s.int64(5, e.sizeBytes);
  s.int64(6, e.sizeLimitBytes);
  s.int64(7, e.version);
  timestamp(s, 8, e.allocateTime);
  timestamp(s, 9, e.lastAccessTime);
  timestamp(s, 10, e.ttl);
  timestamp(s, 11, e.maxIdle);
  timestamp(s, 12, e.remainingTtl);
};

/**
 * Whether this writes what `toBinary` would: an entry made as a message (an
 * init object may lack fields) with no unknown fields.
 */
const plain = (e: MemoryEntry | undefined) =>
  e === undefined ||
  (e.$typeName === `${service}MemoryEntry` &&
    e.$unknown === undefined &&
    e.parts?.$unknown === undefined &&
    e.allocateTime?.$unknown === undefined &&
    e.lastAccessTime?.$unknown === undefined &&
    e.ttl?.$unknown === undefined &&
    e.maxIdle?.$unknown === undefined &&
    e.remainingTtl?.$unknown === undefined);

interface Answer {
  readonly entry?: MemoryEntry;
  readonly data?: Uint8Array;
  readonly $unknown?: unknown;
}

/**
 * The wire bytes of a MemoryManager Read, Write or Allocate answer (bytes,
 * then the entry, as their field numbers say); undefined for any other.
 */
export const encodeEntries = (method: DescMethod, answer: unknown): Uint8Array | undefined => {
  const a = answer as Answer;
  if (a.$unknown !== undefined || !plain(a.entry)) return undefined;
  const e = a.entry;
  switch (method.output.typeName) {
    case `${service}ReadResponse`:
      return encode((s) => {
        if (a.data !== undefined) s.bytes(1, a.data);
        if (e !== undefined) s.message(2, () => entry(s, e));
      });
    case `${service}WriteResponse`:
    case `${service}AllocateResponse`:
      return encode((s) => {
        if (e !== undefined) s.message(1, () => entry(s, e));
      });
    default:
      return undefined;
  }
};
