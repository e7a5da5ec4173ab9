/**
 * Envelopes: the checks every outgoing message passes, the defaults the mesh
 * fills in, and the CloudEvents 1.0 Kafka binary-mode mapping (the headers
 * the `cloudevents` package's binding gives) that makes our records readable
 * by any Kafka consumer:
 *
 * | Envelope          | Kafka record                         |
 * |-------------------|--------------------------------------|
 * | message_id        | `ce_id`                              |
 * | message_type      | `ce_type`                            |
 * | source            | `ce_source`                          |
 * | time              | `ce_time` (RFC 3339)                 |
 * | content_type      | `content-type`                       |
 * | partition_key     | `ce_partitionkey` and the record key |
 * | kind              | `ce_messagekind` (command / event)   |
 * | correlation_id …  | `ce_correlationid`, `ce_causationid`, `ce_conversationid`, `ce_destination`, `ce_expirationtime`, `ce_replyto`, `ce_inreplyto` |
 * | headers           | record headers under their own names |
 * | payload           | the record value                     |
 */
import { randomUUID } from "node:crypto";
import {
  type Timestamp,
  timestampDate,
  timestampFromMs,
  timestampMs,
} from "@bufbuild/protobuf/wkt";
import { Clock, Effect } from "effect";
import { type Envelope, MessageKind } from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { type FieldViolation, InvalidArgument, ResourceExhausted } from "../common/errors.js";
import * as V from "../common/validate.js";
import type { LogRecord, OutRecord } from "./log.js";

/** Message types, destinations and groups: they become topic names. */
const NAME = /^[A-Za-z0-9._-]{1,180}$/;
export const name = (field: string, value: string): V.Violations =>
  value === ""
    ? [{ field, description: "is required" }]
    : NAME.test(value)
      ? []
      : [{ field, description: "must be 1-180 letters, digits, '.', '_' or '-'" }];

const HEADER_NAME = /^[A-Za-z0-9._-]{1,64}$/;
const MAX_HEADERS = 64;
export const DEFAULT_SOURCE = "floworchestrator-mesh";

/** Content types the bus accepts, by their media type (parameters such as charset allowed). */
const CONTENT_TYPES = new Set([
  "application/json",
  "application/protobuf",
  "application/x-protobuf",
  "application/octet-stream",
  "text/plain",
]);
const mediaType = (contentType: string) =>
  CONTENT_TYPES.has(contentType)
    ? contentType
    : (contentType.split(";")[0]?.trim().toLowerCase() ?? "");

/** What a message is being sent as: it decides which routing fields are required. */
export type Role = "command" | "event" | "reply";

const headerViolations = (field: string, headers: Readonly<Record<string, string>>) => {
  const entries = Object.entries(headers);
  if (entries.length > MAX_HEADERS)
    return [{ field, description: `at most ${MAX_HEADERS} headers` }];
  return entries.flatMap(([key, value]) => {
    const at = `${field}[${JSON.stringify(key)}]`;
    if (!HEADER_NAME.test(key) || key === "content-type")
      return [{ field: at, description: "name must be 1-64 letters, digits, '.', '_' or '-'" }];
    if (/^(ce|fo)_/i.test(key))
      return [{ field: at, description: "names starting with ce_ or fo_ are reserved" }];
    return V.maxLength(at, value, 4096);
  });
};

const payloadViolations = (field: string, contentType: string, payload: Uint8Array) => {
  const media = mediaType(contentType);
  if (!CONTENT_TYPES.has(media))
    return [
      {
        field: `${field}.content_type`,
        description: `unsupported content type "${contentType.slice(0, 100)}" (use ${[...CONTENT_TYPES].join(", ")})`,
      },
    ];
  if (media !== "application/json" || payload.length === 0) return [];
  try {
    JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.length).toString("utf8"));
    return [];
  } catch {
    return [{ field: `${field}.payload`, description: "is not valid JSON (content type is JSON)" }];
  }
};

// The helpers below are module-level on purpose: a closure made per message
// costs more than its work (tsx also names each one as it is created).

const add = (into: FieldViolation[], found: V.Violations) => {
  for (const violation of found) into.push(violation);
};

const optionalId = (into: FieldViolation[], field: string, name: string, value: string) => {
  if (value !== "") add(into, V.label(`${field}.${name}`, value, V.MAX_ID_LENGTH));
};

export interface EnvelopeLimits {
  readonly maxPayloadBytes: number;
}

/**
 * `prepare` without the Effect, at time `now`: the envelope to send, or why
 * it cannot be. PublishBatch calls it once per message: an Effect per
 * message was a good part of what a batch cost.
 */
export const prepareNow = (
  field: string,
  input: Envelope | undefined,
  role: Role,
  limits: EnvelopeLimits,
  now: number,
): Envelope | InvalidArgument | ResourceExhausted => {
  if (input === undefined) return V.invalidArgument([{ field, description: "is required" }]);
  const env = input;
  const contentType = env.contentType === "" ? "application/json" : env.contentType;
  const found: FieldViolation[] = [];
  optionalId(found, field, "message_id", env.messageId);
  add(found, name(`${field}.message_type`, env.messageType));
  optionalId(found, field, "correlation_id", env.correlationId);
  optionalId(found, field, "causation_id", env.causationId);
  optionalId(found, field, "conversation_id", env.conversationId);
  optionalId(found, field, "partition_key", env.partitionKey);
  if (env.source !== "") add(found, V.label(`${field}.source`, env.source, 256));
  if (role === "command") add(found, name(`${field}.destination`, env.destination));
  else if (env.destination !== "")
    found.push({ field: `${field}.destination`, description: `must be empty for ${role}s` });
  if (env.expireTime !== undefined && timestampMs(env.expireTime) <= now)
    found.push({ field: `${field}.expire_time`, description: "is in the past" });
  add(found, headerViolations(`${field}.headers`, env.headers));
  add(found, V.maxLength(`${field}.content_type`, contentType, 255));
  const tooLarge = env.payload.length > limits.maxPayloadBytes;
  if (!tooLarge) add(found, payloadViolations(field, contentType, env.payload));
  if (found.length > 0) return V.invalidArgument(found);
  if (tooLarge) {
    return new ResourceExhausted({
      message: `${field}.payload is ${env.payload.length} bytes, more than the limit of ${limits.maxPayloadBytes}`,
      code: "RESOURCE_ERROR.QUOTA_EXCEEDED",
      metadata: { limit_bytes: String(limits.maxPayloadBytes) },
    });
  }
  // A copy (the caller's message is left as it was); it stays an Envelope
  // through `$typeName`, so `create` would only hand it back.
  return {
    ...env,
    messageId: env.messageId === "" ? randomUUID() : env.messageId,
    kind:
      role === "command"
        ? MessageKind.COMMAND
        : role === "event"
          ? MessageKind.EVENT
          : MessageKind.UNSPECIFIED,
    source: env.source === "" ? DEFAULT_SOURCE : env.source,
    time: env.time ?? timestampAt(now),
    contentType,
  };
};

/** The messages of a batch share their time: one Timestamp (never mutated) for them all. */
let lastTimestamp = timestampFromMs(0);
let lastTimestampMs = 0;
const timestampAt = (ms: number): Timestamp => {
  if (ms !== lastTimestampMs) {
    lastTimestamp = timestampFromMs(ms);
    lastTimestampMs = ms;
  }
  return lastTimestamp;
};

/** RFC 3339 text of a timestamp; the last one is remembered (a batch's messages share it). */
let lastIso = { seconds: 0n, nanos: 0, text: new Date(0).toISOString() };
const isoOf = (t: Timestamp): string => {
  if (t.seconds !== lastIso.seconds || t.nanos !== lastIso.nanos)
    lastIso = { seconds: t.seconds, nanos: t.nanos, text: timestampDate(t).toISOString() };
  return lastIso.text;
};

/**
 * Checks a message about to be sent as `role` and fills in what the mesh
 * supplies: id, time, source, content type, kind. `field` names the message
 * in violations (e.g. `command`, `messages[3]`).
 */
export const prepare = (
  field: string,
  input: Envelope | undefined,
  role: Role,
  limits: EnvelopeLimits,
): Effect.Effect<Envelope, InvalidArgument | ResourceExhausted> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const prepared = prepareNow(field, input, role, limits, now);
    return prepared instanceof InvalidArgument || prepared instanceof ResourceExhausted
      ? Effect.fail(prepared)
      : Effect.succeed(prepared);
  });

const KIND_NAMES: Partial<Record<MessageKind, string>> = {
  [MessageKind.COMMAND]: "command",
  [MessageKind.EVENT]: "event",
};

/** An optional attribute: absent when empty. */
const put = (headers: Record<string, string>, key: string, value: string) => {
  if (value !== "") headers[key] = value;
};

/**
 * The Kafka record (CloudEvents binary mode) carrying a prepared envelope.
 * The headers are the ones the `cloudevents` package's `Kafka.binary`
 * gives for the event (test/unit/envelope.test.ts holds them to it), written
 * out here: building a CloudEvent and its binding cost more per message than
 * the rest of the mesh's work on a PublishBatch.
 */
export const toRecord = (
  env: Envelope,
  topic: string,
  extra: Readonly<Record<string, string>> = {},
): OutRecord => {
  const headers: Record<string, string> = { ...env.headers };
  headers["content-type"] = env.contentType;
  headers.ce_id = env.messageId;
  headers.ce_time = env.time ? isoOf(env.time) : new Date().toISOString();
  headers.ce_type = env.messageType;
  headers.ce_source = env.source;
  headers.ce_specversion = "1.0";
  put(headers, "ce_correlationid", env.correlationId);
  put(headers, "ce_causationid", env.causationId);
  put(headers, "ce_conversationid", env.conversationId);
  put(headers, "ce_destination", env.destination);
  put(headers, "ce_partitionkey", env.partitionKey);
  put(headers, "ce_replyto", env.replyTo);
  put(headers, "ce_inreplyto", env.inReplyTo);
  put(headers, "ce_messagekind", KIND_NAMES[env.kind] ?? "");
  if (env.expireTime)
    put(headers, "ce_expirationtime", timestampDate(env.expireTime).toISOString());
  for (const key in extra) headers[key] = extra[key] as string;
  return {
    topic,
    key: env.partitionKey === "" ? undefined : env.partitionKey,
    value: env.payload,
    headers,
  };
};

/**
 * The Timestamp of an RFC 3339 text; the last one is remembered (records
 * of one batch mostly share their time). Never mutated, so shared.
 */
let lastParsed: { readonly iso: string; readonly time: Timestamp | undefined } = {
  iso: "",
  time: undefined,
};
const timestampOf = (iso: string | undefined): Timestamp | undefined => {
  if (iso === undefined) return undefined;
  if (iso !== lastParsed.iso) {
    const ms = Date.parse(iso);
    lastParsed = { iso, time: Number.isNaN(ms) ? undefined : timestampFromMs(ms) };
  }
  return lastParsed.time;
};

/** `ce_*`, `fo_*` (any case) and `content-type`: attributes, not the message's own headers. */
const isReserved = (key: string): boolean => {
  if (key === "content-type") return true;
  if (key.charCodeAt(2) !== 95 /* _ */) return false;
  const a = key.charCodeAt(0) | 0x20; // lower case of a letter
  const b = key.charCodeAt(1) | 0x20;
  return (a === 99 /* c */ && b === 101) /* e */ || (a === 102 /* f */ && b === 111) /* o */;
};

/**
 * The envelope a record carries. Records written by other producers read
 * as well as they can: a missing id becomes the record's coordinates, a
 * missing type is empty. The payload is the record's value itself, not a
 * copy, and the message is built as it is (`create` would copy every
 * field): consumers read tens of thousands a second.
 */
export const fromRecord = (record: LogRecord): Envelope => {
  const h = record.headers;
  const headers: Record<string, string> = {};
  for (const key in h) {
    if (!isReserved(key)) headers[key] = h[key] as string;
  }
  const kind = h.ce_messagekind;
  return {
    $typeName: "floworchestrator.messaging.v1.Envelope",
    messageId: h.ce_id ?? `${record.topic}/${record.partition}/${record.offset}`,
    messageType: h.ce_type ?? "",
    kind:
      kind === "command"
        ? MessageKind.COMMAND
        : kind === "event"
          ? MessageKind.EVENT
          : MessageKind.UNSPECIFIED,
    correlationId: h.ce_correlationid ?? "",
    causationId: h.ce_causationid ?? "",
    conversationId: h.ce_conversationid ?? "",
    source: h.ce_source ?? "",
    destination: h.ce_destination ?? "",
    time: timestampOf(h.ce_time) ?? timestampFromMs(record.timestamp),
    expireTime: timestampOf(h.ce_expirationtime),
    headers,
    contentType: h["content-type"] ?? h.ce_datacontenttype ?? "application/octet-stream",
    payload: record.value,
    partitionKey: h.ce_partitionkey ?? record.key ?? "",
    replyTo: h.ce_replyto ?? "",
    inReplyTo: h.ce_inreplyto ?? "",
  };
};

/** Whether a message's expiration time has passed. */
export const isExpired = (env: Envelope, now: number): boolean =>
  env.expireTime !== undefined && timestampMs(env.expireTime) <= now;
