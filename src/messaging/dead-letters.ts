/**
 * Dead letters. A message whose retries are spent is appended to its
 * group's dead-letter topic (the original record: value, CloudEvents and
 * application headers, key) with `fo_dlq_*` headers saying why, how many
 * attempts, and where it came from; then a `Fault.<type>` event is published
 * (MassTransit's `Fault<T>`), with the original message's correlation id and
 * the original id as causation id; both are stored in one append. Its JSON payload names the failure and
 * carries the original payload (base64).
 *
 * ListDeadLetters pages through the topic; ReplayDeadLetters appends the
 * chosen ones to the group's retry topic, which every subscription of the
 * group also consumes: they come back to that group only, as first
 * deliveries. The dead-letter topic is a log: replayed letters stay listed
 * until the topic's retention removes them.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Clock, Effect } from "effect";
import type {
  ListDeadLettersRequest,
  ReplayDeadLettersRequest,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import {
  type DeadLetter,
  DeadLetterSchema,
  EnvelopeSchema,
  MessageKind,
} from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { NotFound } from "../common/errors.js";
import { decodePageToken, encodePageToken } from "../common/page-token.js";
import * as V from "../common/validate.js";
import { unavailable } from "./common.js";
import type { DeliveryOut } from "./dispatcher.js";
import { DEFAULT_SOURCE, fromRecord, name, toRecord } from "./envelope.js";
import type { LogRecord, MessageLogShape, OutRecord, TopicPage } from "./log.js";
import { faultType, type Topics } from "./topics.js";

const MAX_REPLAY = 500;
const SCAN_PAGE = 500;

const H = {
  reason: "fo_dlq_reason",
  attempts: "fo_dlq_attempts",
  group: "fo_dlq_group",
  topic: "fo_dlq_topic",
  partition: "fo_dlq_partition",
  offset: "fo_dlq_offset",
  time: "fo_dlq_time",
} as const;

const idOf = (record: LogRecord) => `${record.partition}-${record.offset}`;

const toDeadLetter = (record: LogRecord): DeadLetter =>
  create(DeadLetterSchema, {
    deadLetterId: idOf(record),
    message: fromRecord(record),
    reason: record.headers[H.reason] ?? "",
    attempts: Number(record.headers[H.attempts] ?? 0),
    originalTopic: record.headers[H.topic] ?? "",
    originalPartition: Number(record.headers[H.partition] ?? 0),
    originalOffset: BigInt(record.headers[H.offset] ?? 0),
    deadLetterTime: timestampFromMs(Number(record.headers[H.time] ?? record.timestamp)),
  });

/** The record as it was before it was dead-lettered: our `fo_dlq_*` headers removed. */
const original = (record: LogRecord, topic: string): OutRecord => ({
  topic,
  key: record.key,
  value: record.value,
  headers: Object.fromEntries(
    Object.entries(record.headers).filter(([key]) => !key.startsWith("fo_dlq_")),
  ),
});

export const makeDeadLetters = (log: MessageLogShape, topics: Topics) => {
  /** The dispatcher's hook: dead letter, then Fault event. */
  const deadLetter = (group: string, delivery: DeliveryOut, reason: string) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis;
      const { record, message } = delivery;
      const fault = create(EnvelopeSchema, {
        messageId: `fault-${group}-${record.topic}-${record.partition}-${record.offset}`,
        messageType: faultType(message.messageType || "unknown"),
        kind: MessageKind.EVENT,
        correlationId: message.correlationId,
        causationId: message.messageId,
        conversationId: message.conversationId,
        source: DEFAULT_SOURCE,
        time: timestampFromMs(now),
        contentType: "application/json",
        payload: Buffer.from(
          JSON.stringify({
            messageId: message.messageId,
            messageType: message.messageType,
            group,
            reason,
            attempts: delivery.attempt,
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            faultTime: new Date(now).toISOString(),
            contentType: message.contentType,
            payload: Buffer.from(message.payload).toString("base64"),
          }),
        ),
      });
      const topic = topics.deadLetter(group);
      const faultTopic = topics.event(fault.messageType);
      yield* log.ensureTopics([topic, faultTopic]);
      // One append: the dead letter and its Fault are stored together or the whole is retried.
      yield* log.append([
        {
          topic,
          key: record.key,
          value: record.value,
          headers: {
            ...record.headers,
            [H.reason]: reason,
            [H.attempts]: String(delivery.attempt),
            [H.group]: group,
            [H.topic]: record.topic,
            [H.partition]: String(record.partition),
            [H.offset]: String(record.offset),
            [H.time]: String(now),
          },
        },
        toRecord(fault, faultTopic),
      ]);
    });

  const listDeadLetters = (req: ListDeadLettersRequest) =>
    Effect.gen(function* () {
      yield* V.check(name("group", req.group));
      const size = yield* V.pageSize(req.pageSize);
      const identity = { group: req.group };
      const position = yield* decodePageToken(req.pageToken, identity);
      const from = (position?.value ?? {}) as Record<number, number>;
      const page = yield* unavailable(log.read(topics.deadLetter(req.group), from, size));
      return {
        deadLetters: page.records.map(toDeadLetter),
        nextPageToken: page.next ? encodePageToken({ value: page.next, id: "" }, identity) : "",
      };
    });

  const replayDeadLetters = (req: ReplayDeadLettersRequest) =>
    Effect.gen(function* () {
      yield* V.check(
        name("group", req.group),
        req.deadLetterIds.length === 0
          ? [{ field: "dead_letter_ids", description: "must not be empty" }]
          : V.maxItems("dead_letter_ids", req.deadLetterIds, MAX_REPLAY),
        req.deadLetterIds.flatMap((id, i) =>
          /^\d{1,9}-\d{1,18}$/.test(id)
            ? []
            : [{ field: `dead_letter_ids[${i}]`, description: "is not a dead letter id" }],
        ),
      );
      const wanted = new Set(req.deadLetterIds);
      const found = new Map<string, LogRecord>();
      const topic = topics.deadLetter(req.group);
      let from: Readonly<Record<number, number>> | undefined = {};
      while (from && found.size < wanted.size) {
        const page: TopicPage = yield* unavailable(log.read(topic, from, SCAN_PAGE));
        for (const record of page.records) {
          if (wanted.has(idOf(record))) found.set(idOf(record), record);
        }
        from = page.next;
      }
      const missing = [...wanted].filter((id) => !found.has(id));
      if (missing.length > 0) {
        return yield* new NotFound({
          message: `no dead letter ${missing.slice(0, 5).join(", ")} in group ${req.group}`,
          metadata: { group: req.group, dead_letter_id: missing[0] ?? "" },
        });
      }
      const retry = topics.retry(req.group);
      yield* unavailable(
        log
          .ensureTopics([retry])
          .pipe(Effect.zipRight(log.append([...found.values()].map((r) => original(r, retry))))),
      );
      return { replayedCount: found.size };
    });

  return { deadLetter, listDeadLetters, replayDeadLetters };
};
