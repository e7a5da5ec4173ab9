/**
 * SendCommand, PublishEvent and PublishBatch: checked envelopes appended to
 * their topics, returning only once the log stored them (bounded by the send
 * timeout, then UNAVAILABLE: nothing is acknowledged that was not stored).
 *
 * The message id is the idempotency key: an id this instance published in
 * the last DEDUPE_WINDOW_MS is not published again, the first receipt is
 * returned (marked duplicate); a send of the same id still in progress is
 * waited for. A failed send forgets the id, so the caller can retry it.
 */
import { create } from "@bufbuild/protobuf";
import { Clock, Deferred, type Duration, Effect, Exit } from "effect";
import type {
  PublishBatchRequest,
  PublishEventRequest,
  SendCommandRequest,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import {
  type Envelope,
  MessageKind,
  type PublishReceipt,
  PublishReceiptSchema,
} from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { Unavailable } from "../common/errors.js";
import * as V from "../common/validate.js";
import { unavailable } from "./common.js";
import { type EnvelopeLimits, prepare, type Role, toRecord } from "./envelope.js";
import type { MessageLogShape, OutRecord } from "./log.js";
import type { Topics } from "./topics.js";

export const DEDUPE_WINDOW_MS = 10 * 60_000;
const DEDUPE_MAX = 100_000;
const MAX_BATCH = 500;

export interface PublisherSettings extends EnvelopeLimits {
  readonly sendTimeout: Duration.Duration;
}

interface Sent {
  readonly at: number;
  readonly receipt: Deferred.Deferred<PublishReceipt, Unavailable>;
}

export const makePublisher = (
  log: MessageLogShape,
  topics: Topics,
  settings: PublisherSettings,
) => {
  const recent = new Map<string, Sent>();

  const evict = (now: number) => {
    for (const [id, sent] of recent) {
      if (recent.size <= DEDUPE_MAX && now - sent.at < DEDUPE_WINDOW_MS) break;
      recent.delete(id);
    }
  };

  const stored = (topics: ReadonlyArray<string>, records: ReadonlyArray<OutRecord>) =>
    unavailable(log.ensureTopics(topics).pipe(Effect.zipRight(log.append(records)))).pipe(
      Effect.timeoutFail({
        duration: settings.sendTimeout,
        onTimeout: () =>
          new Unavailable({
            message:
              "the message broker did not acknowledge in time; the message may not be stored, retry with the same message id",
          }),
      }),
    );

  /**
   * Appends every message not seen before, in one log append; returns one
   * receipt per message in input order.
   */
  const append = (
    items: ReadonlyArray<{ readonly message: Envelope; readonly topic: string }>,
    extraHeaders: Readonly<Record<string, string>> = {},
  ) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis;
      evict(now);
      const mine: Array<{ index: number; sent: Sent }> = [];
      const receipts: Array<Effect.Effect<PublishReceipt, Unavailable>> = [];
      for (const [index, { message }] of items.entries()) {
        const earlier = recent.get(message.messageId);
        if (earlier) {
          receipts.push(
            Deferred.await(earlier.receipt).pipe(
              Effect.map((r) => create(PublishReceiptSchema, { ...r, duplicate: true })),
            ),
          );
          continue;
        }
        const sent: Sent = {
          at: now,
          receipt: yield* Deferred.make<PublishReceipt, Unavailable>(),
        };
        recent.set(message.messageId, sent);
        mine.push({ index, sent });
        receipts.push(Deferred.await(sent.receipt));
      }
      if (mine.length > 0) {
        const chosen = mine.map(({ index }) => items[index] as (typeof items)[number]);
        const exit = yield* Effect.exit(
          stored(
            [...new Set(chosen.map((i) => i.topic))],
            chosen.map((i) => toRecord(i.message, i.topic, extraHeaders)),
          ),
        );
        for (const [n, { index, sent }] of mine.entries()) {
          const id = (items[index] as (typeof items)[number]).message.messageId;
          if (Exit.isSuccess(exit)) {
            const position = exit.value[n];
            yield* Deferred.succeed(
              sent.receipt,
              create(PublishReceiptSchema, {
                messageId: id,
                topic: position?.topic ?? "",
                partition: position?.partition ?? 0,
                offset: BigInt(position?.offset ?? 0),
              }),
            );
          } else {
            if (recent.get(id) === sent) recent.delete(id);
            yield* Deferred.failCause(sent.receipt, exit.cause);
          }
        }
      }
      return yield* Effect.all(receipts);
    });

  const topicOf = (message: Envelope) =>
    message.kind === MessageKind.COMMAND
      ? topics.command(message.destination)
      : topics.event(message.messageType);

  const one = (field: string, input: Envelope | undefined, role: Role) =>
    prepare(field, input, role, settings).pipe(
      Effect.flatMap((message) => append([{ message, topic: topicOf(message) }])),
      Effect.map((receipts) => ({ receipt: receipts[0] })),
    );

  return {
    append,
    topicOf,
    sendCommand: (req: SendCommandRequest) => one("command", req.command, "command"),
    publishEvent: (req: PublishEventRequest) => one("event", req.event, "event"),
    publishBatch: (req: PublishBatchRequest) =>
      Effect.gen(function* () {
        yield* V.check(
          req.messages.length === 0
            ? [{ field: "messages", description: "must not be empty" }]
            : V.maxItems("messages", req.messages, MAX_BATCH),
        );
        const prepared = yield* Effect.forEach(req.messages, (m, i) =>
          m.kind === MessageKind.COMMAND || m.kind === MessageKind.EVENT
            ? prepare(
                `messages[${i}]`,
                m,
                m.kind === MessageKind.COMMAND ? "command" : "event",
                settings,
              )
            : V.invalid(
                `messages[${i}].kind`,
                "must be MESSAGE_KIND_COMMAND or MESSAGE_KIND_EVENT",
              ),
        );
        const receipts = yield* append(
          prepared.map((message) => ({ message, topic: topicOf(message) })),
        );
        return { receipts };
      }),
  };
};

export type Publisher = ReturnType<typeof makePublisher>;
