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
  for (const [name, value] of Object.entries(headers ?? {})) {
    const last = Array.isArray(value) ? value[value.length - 1] : value;
    if (last !== undefined) out[name] = Buffer.isBuffer(last) ? last.toString("utf8") : last;
  }
  return out;
};

/** A fetched message as a record (its bytes copied out of the fetch buffer). */
export const fromMessage = (
  topic: string,
  partition: number,
  message: KafkaMessage,
): LogRecord => ({
  topic,
  partition,
  offset: Number(message.offset),
  ...(message.key === null ? {} : { key: message.key.toString("utf8") }),
  value: message.value === null ? new Uint8Array(0) : new Uint8Array(message.value),
  headers: headersOf(message.headers),
  timestamp: Number(message.timestamp),
});
