/** Records between the log's types and kafkajs messages. */
import type { IHeaders, KafkaMessage, Message } from "kafkajs";
import type { LogRecord, OutRecord } from "../log.js";

/**
 * The message kafkajs sends for a record. Neither the value's bytes nor the
 * headers are copied: kafkajs only reads them.
 */
export const toMessage = (record: OutRecord): Message => ({
  key: record.key ?? null,
  value: Buffer.from(record.value.buffer, record.value.byteOffset, record.value.byteLength),
  headers: record.headers,
});

/** Bytes a record takes in a request, near enough to split requests by. */
export const sizeOf = (record: OutRecord): number => {
  let size = 64 + record.value.byteLength + Buffer.byteLength(record.key ?? "");
  const headers = record.headers;
  for (const name in headers) {
    size += 8 + Buffer.byteLength(name) + Buffer.byteLength(headers[name] as string);
  }
  return size;
};

/** Header values as text; of a name given more than once, the last (as Java's `lastHeader`). */
const headersOf = (headers: IHeaders | undefined): Record<string, string> => {
  const out: Record<string, string> = {};
  for (const name in headers) {
    const value = headers[name];
    const last = Array.isArray(value) ? value[value.length - 1] : value;
    if (last !== undefined) out[name] = typeof last === "string" ? last : last.toString("utf8");
  }
  return out;
};

const EMPTY = new Uint8Array(0);

/**
 * A fetched message as a record. The value is kafkajs' own Buffer, a view
 * of the fetch response, not a copy: records are read-only (see log.ts)
 * and live until their batch is settled, so holding the response that long
 * costs less than copying every payload.
 */
export const fromMessage = (topic: string, partition: number, message: KafkaMessage): LogRecord => {
  const record: { -readonly [K in keyof LogRecord]: LogRecord[K] } = {
    topic,
    partition,
    offset: Number(message.offset),
    value: message.value ?? EMPTY,
    headers: headersOf(message.headers),
    timestamp: Number(message.timestamp),
  };
  if (message.key !== null) record.key = message.key.toString("utf8");
  return record;
};
