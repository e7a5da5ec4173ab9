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
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Clock, Effect } from "effect";
import {
  type Envelope,
  EnvelopeSchema,
  MessageKind,
} from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { InvalidArgument, ResourceExhausted } from "../common/errors.js";
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
const mediaType = (contentType: string) => contentType.split(";")[0]?.trim().toLowerCase() ?? "";

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
  if (!CONTENT_TYPES.has(mediaType(contentType)))
    return [
      {
        field: `${field}.content_type`,
        description: `unsupported content type "${contentType.slice(0, 100)}" (use ${[...CONTENT_TYPES].join(", ")})`,
      },
    ];
  if (mediaType(contentType) !== "application/json" || payload.length === 0) return [];
  try {
    JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.length).toString("utf8"));
    return [];
  } catch {
    return [{ field: `${field}.payload`, description: "is not valid JSON (content type is JSON)" }];
  }
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
  const at = (f: string) => `${field}.${f}`;
  const optionalId = (f: string, value: string) =>
    value === "" ? [] : V.label(at(f), value, V.MAX_ID_LENGTH);
  const contentType = env.contentType === "" ? "application/json" : env.contentType;
  const violations = [
    ...optionalId("message_id", env.messageId),
    ...name(at("message_type"), env.messageType),
    ...optionalId("correlation_id", env.correlationId),
    ...optionalId("causation_id", env.causationId),
    ...optionalId("conversation_id", env.conversationId),
    ...optionalId("partition_key", env.partitionKey),
    ...(env.source === "" ? [] : V.label(at("source"), env.source, 256)),
    ...(role === "command"
      ? name(at("destination"), env.destination)
      : env.destination === ""
        ? []
        : [{ field: at("destination"), description: `must be empty for ${role}s` }]),
    ...(env.expireTime !== undefined && timestampMs(env.expireTime) <= now
      ? [{ field: at("expire_time"), description: "is in the past" }]
      : []),
    ...headerViolations(at("headers"), env.headers),
    ...V.maxLength(at("content_type"), contentType, 255),
    ...(env.payload.length > limits.maxPayloadBytes
      ? []
      : payloadViolations(field, contentType, env.payload)),
  ];
  if (violations.length > 0) return V.invalidArgument(violations);
  if (env.payload.length > limits.maxPayloadBytes) {
    return new ResourceExhausted({
      message: `${at("payload")} is ${env.payload.length} bytes, more than the limit of ${limits.maxPayloadBytes}`,
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
    time: env.time ?? timestampFromMs(now),
    contentType,
  };
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
  headers.ce_time = env.time ? timestampDate(env.time).toISOString() : new Date().toISOString();
  headers.ce_type = env.messageType;
  headers.ce_source = env.source;
  headers.ce_specversion = "1.0";
  const put = (key: string, value: string) => {
    if (value !== "") headers[key] = value;
  };
  put("ce_correlationid", env.correlationId);
  put("ce_causationid", env.causationId);
  put("ce_conversationid", env.conversationId);
  put("ce_destination", env.destination);
  put("ce_partitionkey", env.partitionKey);
  put("ce_replyto", env.replyTo);
  put("ce_inreplyto", env.inReplyTo);
  put("ce_messagekind", KIND_NAMES[env.kind] ?? "");
  if (env.expireTime) put("ce_expirationtime", timestampDate(env.expireTime).toISOString());
  for (const key in extra) headers[key] = extra[key] as string;
  return {
    topic,
    key: env.partitionKey === "" ? undefined : env.partitionKey,
    value: env.payload,
    headers,
  };
};

const KINDS: Record<string, MessageKind> = {
  command: MessageKind.COMMAND,
  event: MessageKind.EVENT,
};

const timestampOf = (iso: string | undefined) => {
  const ms = iso === undefined ? Number.NaN : Date.parse(iso);
  return Number.isNaN(ms) ? undefined : timestampFromMs(ms);
};

/**
 * The envelope a record carries. Records written by other producers read
 * as well as they can: a missing id becomes the record's coordinates, a
 * missing type is empty.
 */
export const fromRecord = (record: LogRecord): Envelope => {
  const h = record.headers;
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(h)) {
    if (!/^(ce|fo)_/i.test(key) && key !== "content-type") headers[key] = value;
  }
  return create(EnvelopeSchema, {
    messageId: h.ce_id ?? `${record.topic}/${record.partition}/${record.offset}`,
    messageType: h.ce_type ?? "",
    kind: KINDS[h.ce_messagekind ?? ""] ?? MessageKind.UNSPECIFIED,
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
  });
};

/** Whether a message's expiration time has passed. */
export const isExpired = (env: Envelope, now: number): boolean =>
  env.expireTime !== undefined && timestampMs(env.expireTime) <= now;
