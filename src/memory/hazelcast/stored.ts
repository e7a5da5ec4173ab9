/**
 * What the maps hold: JSON values (so member-side predicates filter on their
 * fields), read back as the exact stored text; and durations in the form
 * the member keeps them.
 */
import { Clock } from "effect";
import { HazelcastJsonValue } from "hazelcast-client";
import type { MemoryRecord } from "../store.js";

/** This instance's clock: records' `expireTime` and locks' leases are checked against it. */
export const now = Clock.currentTimeMillis;

/** Hazelcast's "forever" comes back as Long.MAX_VALUE; anything beyond this is "no limit". */
export const NO_LIMIT = Number.MAX_SAFE_INTEGER;

/**
 * A duration for the member, which keeps whole seconds (truncating) and
 * rounds expiration times down to the second: rounded up to the second plus
 * one, so the entry lives at least `ms` and at most ~2 s more.
 */
export const memberMillis = (ms: number): number =>
  Math.ceil(Math.max(ms, 0) / 1_000) * 1_000 + 1_000;

/** Max idle for the member; 0 (Hazelcast: none) when the record has none. */
export const memberMaxIdle = (maxIdleMs: number): number =>
  maxIdleMs > 0 ? memberMillis(maxIdleMs) : 0;

const isLong = (value: unknown): value is { toNumber: () => number } =>
  typeof value === "object" &&
  value !== null &&
  typeof (value as { toNumber?: unknown }).toNumber === "function";

/** A time or limit from the member (an entry view's); anything but a finite number is "no limit". */
export const asLong = (value: unknown): number => {
  // The client's Long converts itself; Number() would go through its decimal text.
  const n = isLong(value) ? value.toNumber() : Number(value);
  return Number.isFinite(n) ? n : NO_LIMIT;
};

/**
 * Bytes up to this size are kept in their record (base64, after the
 * record's fields): a read is then the record's one `get`, and a write or
 * an allocation has no second map to write. Larger ones go to `data`, so
 * records stay small for queries and events.
 */
export const INLINE_MAX_BYTES = 4 * 1024;

/**
 * A record as stored in `meta`: the record's fields and its bytes, either
 * inline (`_inline`, base64) or as the key of their entry in `data`
 * (`_data`); never both.
 */
export type StoredMeta = MemoryRecord & {
  readonly _data?: string;
  readonly _inline?: string;
};

export const recordOf = (meta: StoredMeta): MemoryRecord => {
  const { _data, _inline, ...record } = meta;
  return record;
};

export const json = (value: unknown): HazelcastJsonValue =>
  new HazelcastJsonValue(JSON.stringify(value));

/** A value's JSON text: the client is configured to hand JSON over unparsed. */
const jsonText = (value: unknown): string => {
  if (value instanceof HazelcastJsonValue) return value.toString();
  throw new TypeError(`expected a JSON value in the map, got ${typeof value}`);
};

/** A value read back. */
export const parse = <A>(value: unknown): A => JSON.parse(jsonText(value)) as A;

/** Bytes from their base64, as a plain Uint8Array as every other read gives (a view, not a copy). */
export const fromBase64 = (base64: string): Uint8Array => {
  const bytes = Buffer.from(base64, "base64");
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
};

const INLINE_KEY = ',"_inline":"';

/**
 * A stored record apart from its inline bytes' base64 (undefined when its
 * bytes are in `data`), for the busiest read: `json` of a record and its
 * storage writes `_inline` last, and base64 needs no escaping, so the text
 * ends with `,"_inline":"…"}` and only what comes before goes through the
 * JSON parser (the bytes are most of the text). Any other text is parsed
 * whole.
 */
export const splitMeta = (
  value: unknown,
): { meta: Omit<StoredMeta, "_inline">; inline: string | undefined } => {
  const text = jsonText(value);
  const at = text.lastIndexOf(INLINE_KEY);
  if (at !== -1 && text.endsWith('"}')) {
    const inline = text.slice(at + INLINE_KEY.length, -2);
    // A quote in it: `_inline` was not the last field after all.
    if (!inline.includes('"')) return { meta: JSON.parse(`${text.slice(0, at)}}`), inline };
  }
  const { _inline, ...meta } = JSON.parse(text) as StoredMeta;
  return { meta, inline: _inline };
};
