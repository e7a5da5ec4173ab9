/**
 * SendCommand, PublishEvent and PublishBatch: checked envelopes appended to
 * their topics, returning only once the log stored them (bounded by the send
 * timeout, then UNAVAILABLE: nothing is acknowledged that was not stored).
 *
 * The message id is the idempotency key: an id this instance published in
 * the last DEDUPE_WINDOW_MS is not published again, the first receipt is
 * returned (marked duplicate); a send of the same id still in progress is
 * waited for. A failed send forgets the id, so the caller can retry it.
 *
 * Shared appends: concurrent calls may share one log append (on Kafka one
 * produce request), so the broker round trip and the producer's per-request
 * work are paid per batch, not per call. A call's messages join the open
 * batch; the batch is appended at once when the log has no append of this
 * publisher in progress (an idle mesh adds no delay), else when the one in
 * progress has been answered, when `lingerMs` has passed since its first
 * message, or when it is full (SHARED_MAX_MESSAGES, or `maxPayloadBytes` of
 * payloads); a call larger than that is a batch of its own. Every call of a
 * batch gets the batch's outcome: its receipts once the log stored the whole
 * batch, or the batch's error. With `lingerMs` 0 every call is appended at
 * once on its own, as before shared appends.
 *
 * Order per key is the order messages reached the publisher: a batch keeps
 * it, and batches are launched in the order they filled. (A batch that waited
 * out the linger goes while the previous one is still in progress; the two
 * are then ordered as the log orders appends made at once, on Kafka the
 * order the producer's requests leave in. Calls that wait for each other's
 * receipts are never in such a pair.) The append runs in a fiber of its
 * own, so a caller that goes away does not take the others' append with it;
 * its spans are children of the call that opened the batch.
 */
import { create } from "@bufbuild/protobuf";
import { Cause, Clock, Deferred, type Duration, Effect, Exit, FiberId, type Scope } from "effect";
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
import { InvalidArgument, ResourceExhausted, Unavailable } from "../common/errors.js";
import * as V from "../common/validate.js";
import { unavailable } from "./common.js";
import { type EnvelopeLimits, prepare, prepareNow, type Role, toRecord } from "./envelope.js";
import type { MessageLogShape, OutRecord, Position } from "./log.js";
import type { Topics } from "./topics.js";

export const DEDUPE_WINDOW_MS = 10 * 60_000;
const DEDUPE_MAX = 100_000;
const MAX_BATCH = 500;
/** Most messages a shared append carries (one PublishBatch may bring up to MAX_BATCH). */
const SHARED_MAX_MESSAGES = 1_000;

export interface PublisherSettings extends EnvelopeLimits {
  readonly sendTimeout: Duration.Duration;
  /** How long a message may wait for others to share its append (see above); 0: never. */
  readonly lingerMs: number;
}

/** Messages appended together. */
interface Batch {
  /** Emptied once the batch is settled: `recent` keeps batches for the dedupe window. */
  records: OutRecord[];
  readonly ids: string[];
  readonly topics: Set<string>;
  bytes: number;
  /** Completed when the batch is to be appended; it takes no more messages from then on. */
  readonly go: Deferred.Deferred<void>;
  /** The records' positions, in order, once all are stored; or why not. */
  readonly done: Deferred.Deferred<ReadonlyArray<Position>, Unavailable>;
  timer: ReturnType<typeof setTimeout> | undefined;
  launched: boolean;
}

/** A message id published (or being published): its record in a batch. */
interface Sent {
  readonly at: number;
  readonly batch: Batch;
  readonly index: number;
}

type Item = { readonly message: Envelope; readonly topic: string };

const stopped = () =>
  new Unavailable({
    message:
      "the message bus stopped before the message was sent; it may not be stored, retry with the same message id",
  });

export const makePublisher = (
  log: MessageLogShape,
  topics: Topics,
  settings: PublisherSettings,
): Effect.Effect<ReturnType<typeof publisherOf>, never, Scope.Scope> =>
  Effect.map(Effect.scope, (scope) => publisherOf(log, topics, settings, scope));

const publisherOf = (
  log: MessageLogShape,
  topics: Topics,
  settings: PublisherSettings,
  scope: Scope.Scope,
) => {
  const recent = new Map<string, Sent>();
  /**
   * The ids put in `recent` and when, oldest first from `head` on. Evicting
   * by iterating the Map from its start instead cost tens of µs per message
   * once it was full: V8 walks over every deleted slot before the first
   * live one. Only ids are kept here, so a failed batch (its ids deleted
   * from `recent`) is not held on to until it would have expired.
   */
  let orderIds: string[] = [];
  let orderAts: number[] = [];
  let head = 0;
  /** The batch taking messages, if any. */
  let open: Batch | undefined;
  /** Batches launched and not answered yet. */
  let inFlight = 0;

  const evict = (now: number) => {
    for (; head < orderIds.length; head++) {
      const at = orderAts[head] as number;
      if (recent.size <= DEDUPE_MAX && now - at < DEDUPE_WINDOW_MS) break;
      const id = orderIds[head] as string;
      // Not when the id was sent again since (after a failure): that entry is younger.
      if (recent.get(id)?.at === at) recent.delete(id);
    }
    if (head > 1024 && head * 2 > orderIds.length) {
      orderIds = orderIds.slice(head);
      orderAts = orderAts.slice(head);
      head = 0;
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

  /** Sends `batch` now (its fiber is waiting for this); safe from a timer. */
  const launch = (batch: Batch) => {
    if (batch.launched) return;
    batch.launched = true;
    if (open === batch) open = undefined;
    clearTimeout(batch.timer);
    inFlight++;
    Deferred.unsafeDone(batch.go, Exit.void);
  };

  const settle = (batch: Batch, exit: Exit.Exit<ReadonlyArray<Position>, Unavailable>) =>
    Effect.sync(() => {
      if (batch.launched) inFlight--;
      else {
        clearTimeout(batch.timer);
        if (open === batch) open = undefined;
      }
      const outcome =
        Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause) ? Exit.fail(stopped()) : exit;
      if (Exit.isFailure(outcome)) {
        for (const id of batch.ids) if (recent.get(id)?.batch === batch) recent.delete(id);
      }
      Deferred.unsafeDone(batch.done, outcome);
      batch.records = [];
      batch.topics.clear();
      batch.timer = undefined;
      if (open !== undefined && inFlight === 0) launch(open);
    });

  /** The fiber appending `batch` once it is launched. */
  const run = (batch: Batch) =>
    Deferred.await(batch.go).pipe(
      Effect.zipRight(Effect.suspend(() => stored([...batch.topics], batch.records))),
      Effect.onExit((exit) => settle(batch, exit)),
    );

  /** The open batch if `count` messages of `bytes` fit in it, else a new one (launching a full one). */
  const room = (count: number, bytes: number): { batch: Batch; opened: boolean } => {
    if (
      open !== undefined &&
      settings.lingerMs > 0 &&
      open.records.length + count <= SHARED_MAX_MESSAGES &&
      open.bytes + bytes <= settings.maxPayloadBytes
    ) {
      return { batch: open, opened: false };
    }
    if (open !== undefined) launch(open);
    const batch: Batch = {
      records: [],
      ids: [],
      topics: new Set(),
      bytes: 0,
      go: Deferred.unsafeMake(FiberId.none),
      done: Deferred.unsafeMake(FiberId.none),
      timer: undefined,
      launched: false,
    };
    open = batch;
    return { batch, opened: true };
  };

  /**
   * Appends every message not seen before, sharing an append with
   * concurrent calls; returns one receipt per message in input order.
   */
  const append = (
    items: ReadonlyArray<Item>,
    extraHeaders: Readonly<Record<string, string>> = {},
  ) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis;
      evict(now);
      const refs: Array<{ readonly sent: Sent; readonly duplicate: boolean }> = [];
      let mine: Batch | undefined;
      let opened = false;
      for (const { message, topic } of items) {
        const earlier = recent.get(message.messageId);
        if (earlier) {
          refs.push({ sent: earlier, duplicate: true });
          continue;
        }
        if (mine === undefined) {
          let bytes = 0;
          for (const item of items) bytes += item.message.payload.length;
          ({ batch: mine, opened } = room(items.length, bytes));
        }
        const sent: Sent = { at: now, batch: mine, index: mine.records.length };
        mine.records.push(toRecord(message, topic, extraHeaders));
        mine.ids.push(message.messageId);
        mine.topics.add(topic);
        mine.bytes += message.payload.length;
        recent.set(message.messageId, sent);
        orderIds.push(message.messageId);
        orderAts.push(now);
        refs.push({ sent, duplicate: false });
      }
      if (mine !== undefined) {
        if (opened) yield* Effect.forkIn(run(mine), scope);
        if (
          settings.lingerMs <= 0 ||
          inFlight === 0 ||
          mine.records.length >= SHARED_MAX_MESSAGES ||
          mine.bytes >= settings.maxPayloadBytes
        ) {
          launch(mine);
        } else if (opened) {
          const batch = mine;
          batch.timer = setTimeout(() => launch(batch), settings.lingerMs);
        }
      }
      // Usually one batch (the call's own); duplicates may wait for earlier ones.
      const outcomes = new Map<Batch, ReadonlyArray<Position>>();
      for (const { sent } of refs) {
        if (!outcomes.has(sent.batch))
          outcomes.set(sent.batch, yield* Deferred.await(sent.batch.done));
      }
      return refs.map(({ sent, duplicate }): PublishReceipt => {
        const position = outcomes.get(sent.batch)?.[sent.index];
        return create(PublishReceiptSchema, {
          messageId: sent.batch.ids[sent.index] ?? "",
          topic: position?.topic ?? "",
          partition: position?.partition ?? 0,
          offset: BigInt(position?.offset ?? 0),
          duplicate,
        });
      });
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

  /** Every message of a PublishBatch checked and completed; the first one's failure else. */
  const prepareAll = (messages: ReadonlyArray<Envelope>) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const items: Item[] = [];
      for (const [i, m] of messages.entries()) {
        if (m.kind !== MessageKind.COMMAND && m.kind !== MessageKind.EVENT) {
          return V.invalid(
            `messages[${i}].kind`,
            "must be MESSAGE_KIND_COMMAND or MESSAGE_KIND_EVENT",
          );
        }
        const role = m.kind === MessageKind.COMMAND ? "command" : "event";
        const message = prepareNow(`messages[${i}]`, m, role, settings, now);
        if (message instanceof InvalidArgument || message instanceof ResourceExhausted) {
          return Effect.fail(message);
        }
        items.push({ message, topic: topicOf(message) });
      }
      return Effect.succeed(items);
    });

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
        const receipts = yield* append(yield* prepareAll(req.messages));
        return { receipts };
      }),
  };
};

export type Publisher = ReturnType<typeof publisherOf>;
