/**
 * Protobuf messages written straight to the wire, for the answers the
 * native gRPC path sends most: `toBinary` walks every field through
 * reflection and grows its buffer as it goes. Here one pass measures every
 * field and nested message, a second writes them into one buffer of the
 * exact size, in field-number order and skipping proto3 defaults, as
 * `toBinary` does. Each user (src/messaging/wire.ts, src/memory/wire.ts)
 * walks its messages with a `Sink`, and a property test holds its bytes to
 * `toBinary`'s.
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";

/** Wire types. */
const VARINT = 0;
const LEN = 2;

/** What a message is walked with: once to measure it, once to write it. */
export interface Sink {
  string(field: number, value: string): void;
  int32(field: number, value: number): void;
  int64(field: number, value: bigint): void;
  bytes(field: number, value: Uint8Array): void;
  message(field: number, body: () => void): void;
  /** A `map<string, string>` entry: key and value both written, as protobuf-es does. */
  entry(field: number, key: string, value: string): void;
}

const varintSize = (v: number): number =>
  v < 0 ? 10 : v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5;

/** Bytes of a field's tag (one up to field 15, two from 16). */
const tagSize = (field: number) => varintSize(field << 3);

const varint64Size = (v: bigint): number => {
  let u = BigInt.asUintN(64, v);
  let n = 1;
  while (u >= 0x80n) {
    u >>= 7n;
    n++;
  }
  return n;
};

/**
 * Strings up to this many UTF-16 units are measured and, when ASCII,
 * written by the loops below: ids, types, sources and times are short, and
 * a native call per string (`Buffer.byteLength`, `buf.write`) cost more
 * than the loop.
 */
const SHORT = 64;

/** UTF-8 byte length, as `Buffer.byteLength` gives it (a lone surrogate is 3 bytes). */
const utf8Length = (value: string): number => {
  if (value.length <= SHORT) {
    let ascii = true;
    for (let i = 0; ascii && i < value.length; i++) ascii = value.charCodeAt(i) < 0x80;
    if (ascii) return value.length;
  }
  return Buffer.byteLength(value);
};

/**
 * The measuring pass: the byte length of every string and nested message,
 * in the order the writing pass meets them.
 */
class Measure implements Sink {
  size = 0;
  readonly lengths: number[] = [];
  string(field: number, value: string) {
    if (value === "") return;
    const n = utf8Length(value);
    this.lengths.push(n);
    this.size += tagSize(field) + varintSize(n) + n;
  }
  int32(field: number, value: number) {
    if (value !== 0) this.size += tagSize(field) + varintSize(value);
  }
  int64(field: number, value: bigint) {
    if (value !== 0n) this.size += tagSize(field) + varint64Size(value);
  }
  bytes(field: number, value: Uint8Array) {
    if (value.length > 0) this.size += tagSize(field) + varintSize(value.length) + value.length;
  }
  message(field: number, body: () => void) {
    const outer = this.size;
    const slot = this.lengths.length;
    this.lengths.push(0);
    this.size = 0;
    body();
    const n = this.size;
    this.lengths[slot] = n;
    this.size = outer + tagSize(field) + varintSize(n) + n;
  }
  entry(field: number, key: string, value: string) {
    this.message(field, () => {
      const k = utf8Length(key);
      const v = utf8Length(value);
      this.lengths.push(k, v);
      this.size += 2 + varintSize(k) + k + varintSize(v) + v;
    });
  }
}

/** The writing pass, into a buffer of the measured size. */
class Write implements Sink {
  pos = 0;
  next = 0;
  constructor(
    readonly buf: Buffer,
    readonly lengths: ReadonlyArray<number>,
  ) {}
  private varint(v: number) {
    if (v < 0) return this.varint64(BigInt(v));
    while (v >= 0x80) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }
  private varint64(v: bigint) {
    let u = BigInt.asUintN(64, v);
    while (u >= 0x80n) {
      this.buf[this.pos++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.buf[this.pos++] = Number(u);
  }
  private text(field: number, value: string) {
    const n = this.lengths[this.next++] as number;
    this.varint((field << 3) | LEN);
    this.varint(n);
    if (n === value.length && n <= SHORT) {
      // ASCII (its UTF-8 length is its length): one byte per unit.
      const buf = this.buf;
      const at = this.pos;
      for (let i = 0; i < n; i++) buf[at + i] = value.charCodeAt(i);
      this.pos += n;
    } else this.pos += this.buf.write(value, this.pos, n, "utf8");
  }
  string(field: number, value: string) {
    if (value !== "") this.text(field, value);
  }
  int32(field: number, value: number) {
    if (value === 0) return;
    this.varint((field << 3) | VARINT);
    this.varint(value);
  }
  int64(field: number, value: bigint) {
    if (value === 0n) return;
    this.varint((field << 3) | VARINT);
    if (value >= 0n && value <= BigInt(Number.MAX_SAFE_INTEGER)) this.varint(Number(value));
    else this.varint64(value);
  }
  bytes(field: number, value: Uint8Array) {
    if (value.length === 0) return;
    this.varint((field << 3) | LEN);
    this.varint(value.length);
    this.buf.set(value, this.pos);
    this.pos += value.length;
  }
  message(field: number, body: () => void) {
    this.varint((field << 3) | LEN);
    this.varint(this.lengths[this.next++] as number);
    body();
  }
  entry(field: number, key: string, value: string) {
    this.message(field, () => {
      this.text(1, key);
      this.text(2, value);
    });
  }
}

/** A Timestamp or a Duration (both `int64 seconds = 1; int32 nanos = 2`). */
export const timestamp = (
  s: Sink,
  field: number,
  t: Pick<Timestamp, "seconds" | "nanos"> | undefined,
) => {
  if (t === undefined) return;
  s.message(field, () => {
    s.int64(1, t.seconds);
    s.int32(2, t.nanos);
  });
};

/** `walk` measured, then written into a buffer of exactly its size. */
export const encode = (walk: (s: Sink) => void): Uint8Array => {
  const measure = new Measure();
  walk(measure);
  const write = new Write(Buffer.allocUnsafe(measure.size), measure.lengths);
  walk(write);
  return write.buf;
};
