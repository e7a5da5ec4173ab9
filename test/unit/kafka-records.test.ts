/**
 * kafkajs' record decoder, as patched in `patches/` (headers filled into
 * one object instead of a spread copy per header), still reads headers as
 * kafkajs documents them: a name given once is a Buffer, a name given more
 * than once an array in record order; and the mesh reads the last of them.
 */
import { createRequire } from "node:module";
import { describe, expect, it } from "@effect/vitest";
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
) => { readVarIntBytes(): Buffer };
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
