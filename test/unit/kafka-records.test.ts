/**
 * kafkajs as patched in `patches/`:
 * - the record decoder fills headers into one object instead of a spread
 *   copy per header, and still reads them as kafkajs documents them: a name
 *   given once is a Buffer, a name given more than once an array in record
 *   order; the mesh reads the last of them;
 * - the encoder writes varints straight into its buffer and does not
 *   zero-fill it, and a record's headers straight into the record's one
 *   buffer, and still writes the bytes the original code wrote;
 * - the producer groups a send's messages by partition in one pass, each
 *   partition's in send order;
 * - record batches are checksummed with crc-32's CRC-32C, which must give
 *   what kafkajs' own byte-at-a-time table gives.
 */
import { createRequire } from "node:module";
import { describe, expect, it } from "@effect/vitest";
import fc from "fast-check";
import type { IHeaders, KafkaMessage } from "kafkajs";
import { fromMessage } from "../../src/messaging/kafka/records.js";

const require = createRequire(import.meta.url);
type Codec = { buffer: Buffer };
const Encoder = require("kafkajs/src/protocol/recordBatch/record/v0/index.js") as (record: {
  key: Buffer;
  value: Buffer;
  headers: Record<string, string | string[]>;
}) => Codec;
const Decoder = require("kafkajs/src/protocol/decoder.js") as new (
  buffer: Buffer,
) => { readVarIntBytes(): Buffer; readVarInt(): number; readInt32(): number };
const groupMessagesPerPartition =
  require("kafkajs/src/producer/groupMessagesPerPartition.js") as (args: {
    topic: string;
    partitionMetadata: unknown[];
    messages: Array<{ key: string }>;
    partitioner: (args: { message: { key: string } }) => number;
  }) => Record<number, Array<{ key: string }>>;
const Header = require("kafkajs/src/protocol/recordBatch/header/v0/index.js") as (header: {
  key: string;
  value: unknown;
}) => unknown;
const WireEncoder = require("kafkajs/src/protocol/encoder.js") as {
  new (
    initialSize?: number,
  ): {
    writeInt8(value: number): WireEncoderInstance;
    writeVarLong(value: number): WireEncoderInstance;
    writeVarIntBytes(value: unknown): WireEncoderInstance;
    writeVarIntArray(array: unknown[]): WireEncoderInstance;
    writeVarInt(value: number): WireEncoderInstance;
    writeInt32(value: number): unknown;
    writeVarIntString(value: string): unknown;
    readonly buffer: Buffer;
  };
  encodeZigZag(value: number): number;
  sizeOfVarInt(value: number): number;
  sizeOfVarLong(value: number): number;
  sizeOfVarIntBytes(value: unknown): number;
};
type WireEncoderInstance = InstanceType<typeof WireEncoder>;

/** kafkajs 2.2.4's own unsigned varint, unpatched: the bytes the patched one must write. */
const originalUVarInt = (value: number): number[] => {
  const bytes: number[] = [];
  let v = value;
  while ((v & 0xffffff80) !== 0) {
    bytes.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  bytes.push(v & 0x7f);
  return bytes;
};
const RecordDecoder = require("kafkajs/src/protocol/recordBatch/record/v0/decoder.js") as (
  decoder: unknown,
  context: Record<string, unknown>,
) => KafkaMessage;

/** A record through kafkajs' own encoder and decoder, as a fetch reads it. */
const roundTrip = (headers: Record<string, string | string[]>): KafkaMessage => {
  const encoded = Encoder({ key: Buffer.from("k"), value: Buffer.from("v"), headers }).buffer;
  const body = new Decoder(encoded).readVarIntBytes();
  return RecordDecoder(new Decoder(body), { firstOffset: "7", firstTimestamp: "1000" });
};

const text = (headers: IHeaders | undefined) =>
  Object.fromEntries(
    Object.entries(headers ?? {}).map(([k, v]) => [
      k,
      Array.isArray(v) ? v.map(String) : String(v),
    ]),
  );

describe("kafkajs record headers (patched decoder)", () => {
  it("reads single and repeated names as kafkajs documents them", () => {
    const message = roundTrip({ ce_id: "1", ce_type: "T", tag: ["a", "b", "c"], x: "y" });
    expect(text(message.headers)).toEqual({
      ce_id: "1",
      ce_type: "T",
      tag: ["a", "b", "c"],
      x: "y",
    });
    expect(Buffer.isBuffer(message.headers?.ce_id)).toBe(true);
    expect(message.offset).toBe("7");
  });

  it("keeps a header named __proto__ as an own header, not the object's prototype", () => {
    const headers: Record<string, string> = { ce_id: "1" };
    Object.defineProperty(headers, "__proto__", { value: "p", enumerable: true });
    const message = roundTrip(headers);
    expect(Object.getPrototypeOf(message.headers)).toBe(Object.prototype);
    expect(Object.keys(message.headers ?? {})).toEqual(["ce_id", "__proto__"]);
    expect(String(Object.getOwnPropertyDescriptor(message.headers, "__proto__")?.value)).toBe("p");
  });

  it("gives the mesh the last value of a repeated name", () => {
    const record = fromMessage("t", 0, roundTrip({ ce_type: ["Old", "New"], tag: "a" }));
    expect(record.headers).toMatchObject({ ce_type: "New", tag: "a" });
    expect(record.key).toBe("k");
  });
});

describe("kafkajs encoder (patched)", () => {
  const edges = [0, 1, -1, 63, -64, 64, -65, 127, 128, 8191, 8192, 2 ** 20, -(2 ** 20)];
  const values = [...edges, 2 ** 31 - 1, -(2 ** 31), ...edges.map((v) => v * 1000 + 7)];

  it("writes the varints the original wrote, and reads them back", () => {
    for (const value of values) {
      const encoder = new WireEncoder(1); // tiny: every write has to grow it
      encoder.writeInt32(0x01020304);
      encoder.writeVarInt(value);
      encoder.writeVarIntString("after");
      const expected = [
        1,
        2,
        3,
        4,
        ...originalUVarInt(WireEncoder.encodeZigZag(value)),
        ...originalUVarInt(WireEncoder.encodeZigZag(5)),
        ...Buffer.from("after"),
      ];
      expect([...encoder.buffer], `value ${value}`).toEqual(expected);
      const decoder = new Decoder(encoder.buffer);
      expect(decoder.readInt32()).toBe(0x01020304);
      expect(decoder.readVarInt()).toBe(value);
    }
  });

  it("hands out only the bytes written, whatever the buffer held before", () => {
    // Fill the pool the unfilled buffers come from with garbage first.
    for (let i = 0; i < 64; i++) Buffer.allocUnsafe(100).fill(0xee);
    const encoder = new WireEncoder();
    encoder.writeVarInt(3);
    expect([...encoder.buffer]).toEqual([6]);
    const message = roundTrip({ ce_id: "1" });
    expect(String(message.headers?.ce_id)).toBe("1");
  });
});

describe("kafkajs record encoder (patched)", () => {
  /** kafkajs 2.2.4's record encoder, unpatched: an encoder per header, copied into the record's. */
  const original = (record: {
    offsetDelta: number;
    timestampDelta: number;
    key: Buffer | string | null;
    value: Buffer | string | null;
    headers: Record<string, string | Buffer | Array<string | Buffer>>;
  }): Buffer => {
    const headers = Object.keys(record.headers).flatMap((key) => {
      const value = record.headers[key];
      return Array.isArray(value) ? value.map((v) => ({ key, value: v })) : [{ key, value }];
    });
    let size =
      1 +
      WireEncoder.sizeOfVarLong(record.timestampDelta) +
      WireEncoder.sizeOfVarInt(record.offsetDelta) +
      WireEncoder.sizeOfVarIntBytes(record.key) +
      WireEncoder.sizeOfVarIntBytes(record.value) +
      WireEncoder.sizeOfVarInt(headers.length);
    for (const h of headers) {
      size += WireEncoder.sizeOfVarIntBytes(h.key) + WireEncoder.sizeOfVarIntBytes(h.value);
    }
    return new WireEncoder()
      .writeVarInt(size)
      .writeInt8(0)
      .writeVarLong(record.timestampDelta)
      .writeVarInt(record.offsetDelta)
      .writeVarIntBytes(record.key)
      .writeVarIntBytes(record.value)
      .writeVarIntArray(headers.map(Header)).buffer;
  };
  const bytesOrText = fc.oneof(fc.fullUnicodeString(), fc.uint8Array().map(Buffer.from));

  it("writes the bytes the original wrote, one buffer per record", () => {
    fc.assert(
      fc.property(
        fc.record({
          offsetDelta: fc.nat(2 ** 31 - 1),
          timestampDelta: fc.integer({ min: 0, max: 2 ** 40 }),
          key: fc.option(bytesOrText),
          value: fc.option(
            fc.oneof(bytesOrText, fc.uint8Array({ maxLength: 5000 }).map(Buffer.from)),
          ),
          headers: fc.dictionary(
            fc.fullUnicodeString(),
            fc.oneof(bytesOrText, fc.array(bytesOrText, { maxLength: 3 })),
            { maxKeys: 12 },
          ),
        }),
        (record) => {
          expect([...Encoder(record as never).buffer]).toEqual([...original(record)]);
        },
      ),
      { numRuns: 300, seed: 20261207 },
    );
  });
});

describe("kafkajs record batch checksum (patched)", () => {
  const crc32C = require("kafkajs/src/protocol/recordBatch/crc32C/index.js") as (
    b: Buffer,
  ) => number;
  const original = require("kafkajs/src/protocol/recordBatch/crc32C/crc32C.js") as (
    b: Buffer,
  ) => number;

  it("is the CRC-32C kafkajs computed", () => {
    // The standard check value of CRC-32C.
    expect(crc32C(Buffer.from("123456789"))).toBe(0xe3069283);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 70_000 }), fc.nat(31), (bytes, skip) => {
        // Unaligned views too: slicing reads the bytes in 16s from any offset.
        const b = Buffer.from(bytes).subarray(Math.min(skip, bytes.length));
        expect(crc32C(b)).toBe(original(b) >>> 0);
      }),
      { numRuns: 300, seed: 20261207 },
    );
  });
});

describe("kafkajs producer grouping (patched)", () => {
  it("keeps each partition's messages in send order", () => {
    const messages = Array.from({ length: 10 }, (_, i) => ({ key: `k${i}` }));
    const grouped = groupMessagesPerPartition({
      topic: "t",
      partitionMetadata: [{}, {}, {}],
      messages,
      partitioner: ({ message }) => Number(message.key.slice(1)) % 3,
    });
    expect(grouped).toEqual({
      0: [messages[0], messages[3], messages[6], messages[9]],
      1: [messages[1], messages[4], messages[7]],
      2: [messages[2], messages[5], messages[8]],
    });
    expect(
      groupMessagesPerPartition({
        topic: "t",
        partitionMetadata: [],
        messages,
        partitioner: () => 0,
      }),
    ).toEqual({});
  });
});
