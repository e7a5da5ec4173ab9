/**
 * Subscribe, Ack, Nack and Consume. Subscriptions of one group that consume the same
 * topics in this instance share one log member (one Kafka consumer) and one
 * Dispatcher; the member joins the group with the first such subscription
 * and leaves it (after committing what is done) with the last one.
 *
 * A subscription consumes its destination's command topic and/or the event
 * topics of its types, plus its group's retry topic (replayed dead letters).
 * Each client (connection) may hold `maxSubscriptionsPerClient` at once.
 *
 * Subscribe and Consume are two shapes of one subscription: Subscribe's
 * deliveries are settled by the unary Ack / Nack (which find a delivery id
 * in any group of this instance), Consume's by its own later requests. Both
 * hand out what the dispatcher made ready as one response when batching,
 * so a busy subscription costs one response per batch, not per message.
 */
import { randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  Chunk,
  Deferred,
  Effect,
  Exit,
  FiberRef,
  Option,
  Queue,
  Runtime,
  Scope,
  Sink,
  Stream,
} from "effect";
import type {
  AckRequest,
  ConsumeRequest,
  ConsumeResponseSchema,
  ConsumeSettle,
  NackRequest,
  SubscribeRequest,
  SubscribeResponseSchema,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { StartPosition } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import type { Delivery } from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { CurrentClient } from "../common/caller.js";
import { InvalidArgument, type MeshError, NotFound, ResourceExhausted } from "../common/errors.js";
import * as V from "../common/validate.js";
import { durationField, unavailable } from "./common.js";
import {
  type DeliveryOut,
  Dispatcher,
  type RetrySettings,
  type SettleResult,
} from "./dispatcher.js";
import { name } from "./envelope.js";
import type { Consumer, MessageLogShape, StoreUnavailable } from "./log.js";
import type { Topics } from "./topics.js";

type Item = MessageInitShape<typeof SubscribeResponseSchema>;
type ConsumeItem = MessageInitShape<typeof ConsumeResponseSchema>;

const HOUR = 3_600_000;
const MAX_EVENT_TYPES = 100;
const MAX_ACKS = 1000;
const MAX_BATCH = 1000;

/**
 * The Delivery message itself (its `$typeName` makes `create` take it as
 * it is): a response of a thousand deliveries is built without a copy of
 * each.
 */
const deliveryOf = (d: DeliveryOut): Delivery => ({
  $typeName: "floworchestrator.messaging.v1.Delivery",
  deliveryId: d.deliveryId,
  attempt: d.attempt,
  message: d.message,
  topic: d.record.topic,
  partition: d.record.partition,
  offset: BigInt(d.record.offset),
});

/**
 * Splits what the dispatcher handed out (one array per step) into batches
 * of at most `max`, as Delivery messages; several steps waiting in the
 * queue go out together.
 */
const rebatch = (steps: Chunk.Chunk<ReadonlyArray<DeliveryOut>>, max: number) => {
  const batches: Delivery[][] = [];
  let batch: Delivery[] = [];
  for (const step of steps) {
    for (const d of step) {
      batch.push(deliveryOf(d));
      if (batch.length >= max) {
        batches.push(batch);
        batch = [];
      }
    }
  }
  if (batch.length > 0) batches.push(batch);
  return Chunk.unsafeFromArray(batches);
};

/** Violations of a list of delivery ids; built only when one is bad (acks are the hot path). */
const idViolations = (field: string, ids: ReadonlyArray<string>): V.Violations => {
  let violations: V.Violations = [];
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i] as string;
    if (id === "" || id.length > 256)
      violations = [...violations, ...V.label(`${field}[${i}]`, id, 256)];
  }
  return violations;
};

export interface SubscriptionSettings {
  readonly maxSubscriptionsPerClient: number;
}

interface Group {
  readonly dispatcher: Dispatcher;
  readonly scope: Scope.CloseableScope;
}

const settingsOf = (req: SubscribeRequest) => {
  const deadline = durationField("ack_deadline", req.ackDeadline, {
    fallback: 30_000,
    min: 1000,
    max: 600_000,
  });
  const interval = durationField("retry.interval", req.retry?.interval, {
    fallback: 5000,
    min: 0,
    max: HOUR,
  });
  const maxInterval = durationField("retry.max_interval", req.retry?.maxInterval, {
    fallback: 300_000,
    min: 0,
    max: HOUR,
  });
  const maxRetries = req.retry?.maxRetries ?? 3;
  const maxInFlight = req.maxInFlight === 0 ? 16 : req.maxInFlight;
  const types = new Set(req.eventTypes);
  const violations = [
    ...name("group", req.group),
    ...(req.destination === "" ? [] : name("destination", req.destination)),
    ...(req.destination !== "" && req.destination !== req.group
      ? [
          {
            field: "group",
            description:
              "must be the destination's name when consuming its commands (each command has one consumer group)",
          },
        ]
      : []),
    ...(req.destination === "" && req.eventTypes.length === 0
      ? [{ field: "event_types", description: "name a destination or at least one event type" }]
      : []),
    ...V.maxItems("event_types", req.eventTypes, MAX_EVENT_TYPES),
    ...req.eventTypes.flatMap((t, i) => name(`event_types[${i}]`, t)),
    ...(types.size < req.eventTypes.length
      ? [{ field: "event_types", description: "must not repeat a type" }]
      : []),
    ...(maxInFlight < 1 || maxInFlight > 1000
      ? [{ field: "max_in_flight", description: "must be between 1 and 1000" }]
      : []),
    ...(maxRetries < 0 || maxRetries > 100
      ? [{ field: "retry.max_retries", description: "must be between 0 and 100" }]
      : []),
    ...(req.maxBatchSize < 0 || req.maxBatchSize > MAX_BATCH
      ? [{ field: "max_batch_size", description: `must be between 0 and ${MAX_BATCH}` }]
      : []),
    ...deadline.violations,
    ...interval.violations,
    ...maxInterval.violations,
  ];
  const retry: RetrySettings = {
    maxRetries,
    intervalMs: interval.ms,
    exponential: req.retry?.exponential ?? false,
    maxIntervalMs: maxInterval.ms,
  };
  return { violations, maxInFlight, ackDeadlineMs: deadline.ms, retry };
};

export const makeSubscriptions = (
  log: MessageLogShape,
  topics: Topics,
  settings: SubscriptionSettings,
  deadLetter: (
    group: string,
    delivery: DeliveryOut,
    reason: string,
  ) => Effect.Effect<void, StoreUnavailable>,
) =>
  Effect.gen(function* () {
    const runtime = yield* Effect.runtime<never>();
    const run = (effect: Effect.Effect<void>) => void Runtime.runFork(runtime)(effect);
    const groups = new Map<string, Group>();
    const lock = yield* Effect.makeSemaphore(1);
    const perClient = new Map<string, number>();

    // Leave every group when the bus shuts down.
    yield* Effect.addFinalizer(() =>
      Effect.forEach(groups.values(), (g) =>
        g.dispatcher.close().pipe(Effect.zipRight(Scope.close(g.scope, Exit.void))),
      ),
    );

    /** The group's shared member for these topics, joining the log's group when new. */
    const groupFor = (group: string, consumed: ReadonlyArray<string>, fromBeginning: boolean) =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          const key = `${group}\u0000${consumed.join("\u0000")}`;
          const existing = groups.get(key);
          if (existing) return { key, group: existing };
          let consumer: Consumer | undefined;
          const dispatcher = new Dispatcher(group, {
            commit: (commits) => (consumer ? consumer.commit(commits) : Effect.void),
            deadLetter: (delivery, reason) => deadLetter(group, delivery, reason),
            run,
            now: () => Date.now(),
          });
          const scope = yield* Scope.make();
          consumer = yield* log
            .consume(
              { group, topics: consumed, fromBeginning },
              {
                onRecord: (record) => Effect.promise(() => dispatcher.offer(record)),
                onRecords: (records) => Effect.promise(() => dispatcher.offerAll(records)),
                onAssigned: (assignment) => Effect.sync(() => dispatcher.reassigned(assignment)),
              },
            )
            .pipe(
              Scope.extend(scope),
              Effect.tapError(() => Scope.close(scope, Exit.void)),
              unavailable,
            );
          const created: Group = { dispatcher, scope };
          groups.set(key, created);
          return { key, group: created };
        }),
      );

    /** After a member left: the last one out commits and leaves the log's group. */
    const release = (key: string) =>
      lock.withPermits(1)(
        Effect.suspend(() => {
          const g = groups.get(key);
          if (!g || g.dispatcher.size > 0) return Effect.void;
          groups.delete(key);
          return g.dispatcher.close().pipe(Effect.zipRight(Scope.close(g.scope, Exit.void)));
        }),
      );

    const clientSlot = (client: string) =>
      Effect.acquireRelease(
        Effect.suspend(() => {
          const open = perClient.get(client) ?? 0;
          if (open >= settings.maxSubscriptionsPerClient) {
            return Effect.fail(
              new ResourceExhausted({
                message: `this client already has ${open} open subscriptions (the limit is ${settings.maxSubscriptionsPerClient})`,
                code: "RESOURCE_ERROR.QUOTA_EXCEEDED",
                metadata: { limit: String(settings.maxSubscriptionsPerClient) },
              }),
            );
          }
          perClient.set(client, open + 1);
          return Effect.void;
        }),
        () =>
          Effect.sync(() => {
            const open = (perClient.get(client) ?? 1) - 1;
            if (open <= 0) perClient.delete(client);
            else perClient.set(client, open);
          }),
      );

    /**
     * Opens a subscription for the scope: validated, counted against the
     * client's limit, joined to its group's dispatcher (left when the scope
     * closes: its unacknowledged deliveries go to the others, or back to the
     * log). Deliveries arrive in the queue.
     */
    const open = (req: SubscribeRequest, field: string) =>
      Effect.gen(function* () {
        const s = settingsOf(req);
        yield* V.check(
          field === ""
            ? s.violations
            : s.violations.map((v) => ({ ...v, field: `${field}.${v.field}` })),
        );
        yield* clientSlot(yield* FiberRef.get(CurrentClient));
        const consumed = [
          ...(req.destination === "" ? [] : [topics.command(req.destination)]),
          ...[...new Set(req.eventTypes)].sort().map(topics.event),
          topics.retry(req.group),
        ];
        yield* unavailable(log.ensureTopics(consumed));
        const { key, group } = yield* groupFor(
          req.group,
          consumed,
          req.start !== StartPosition.LATEST,
        );
        const subscriptionId = randomUUID();
        // One item per dispatcher step (a batch), not per delivery: an offer costs about
        // as much as the rest of a delivery's bookkeeping.
        const queue = yield* Queue.unbounded<ReadonlyArray<DeliveryOut>>();
        yield* Effect.acquireRelease(
          Effect.sync(() =>
            group.dispatcher.join({
              id: subscriptionId,
              maxInFlight: s.maxInFlight,
              ackDeadlineMs: s.ackDeadlineMs,
              retry: s.retry,
              deliver: (deliveries) => Queue.unsafeOffer(queue, deliveries),
            }),
          ),
          () =>
            Effect.sync(() => group.dispatcher.leave(subscriptionId)).pipe(
              Effect.zipRight(Queue.shutdown(queue)),
              Effect.zipRight(release(key)),
            ),
        );
        yield* Effect.logDebug("subscription opened").pipe(
          Effect.annotateLogs({ subscription_id: subscriptionId, group: req.group }),
        );
        return {
          subscribed: { subscriptionId, topics: consumed },
          dispatcher: group.dispatcher,
          maxInFlight: s.maxInFlight,
          queue,
        };
      });

    /** What is queued, as batches of at most `max`. */
    const batchesOf = (queue: Queue.Dequeue<ReadonlyArray<DeliveryOut>>, max: number) =>
      Stream.fromQueue(queue).pipe(Stream.mapChunks((steps) => rebatch(steps, max)));

    const subscribe = (req: SubscribeRequest): Stream.Stream<Item, MeshError> =>
      Stream.unwrapScoped(
        Effect.gen(function* () {
          const sub = yield* open(req, "");
          const subscribed: Item = { event: { case: "subscribed", value: sub.subscribed } };
          const deliveries: Stream.Stream<Item> =
            req.maxBatchSize > 1
              ? batchesOf(sub.queue, req.maxBatchSize).pipe(
                  Stream.map(
                    (batch): Item => ({
                      event: { case: "deliveries", value: { deliveries: batch } },
                    }),
                  ),
                )
              : batchesOf(sub.queue, 1).pipe(
                  Stream.map(
                    (batch): Item => ({ event: { case: "delivery", value: batch[0] as Delivery } }),
                  ),
                );
          return Stream.concat(Stream.make(subscribed), deliveries);
        }),
      );

    /**
     * The first request subscribes; every later one settles deliveries, in a
     * fiber of the stream's scope. A bad request ends the stream with its
     * error; the client half-closing ends it cleanly. Either way the
     * subscription then leaves its group, so what it left unacknowledged is
     * redelivered.
     */
    const consume = (
      requests: Stream.Stream<ConsumeRequest>,
    ): Stream.Stream<ConsumeItem, MeshError> =>
      Stream.unwrapScoped(
        Effect.gen(function* () {
          const [first, rest] = yield* Stream.peel(requests, Sink.head());
          const req = Option.getOrUndefined(first)?.request;
          if (req?.case !== "subscribe") {
            const violation = {
              field: "subscribe",
              description: "the first request must subscribe (later ones settle deliveries)",
            };
            return yield* new InvalidArgument({
              message: `invalid ${violation.field}: ${violation.description}`,
              violations: [violation],
            });
          }
          const sub = yield* open(req.value, "subscribe");
          const ended = yield* Deferred.make<void, MeshError>();
          yield* rest.pipe(
            Stream.runForEach((later) =>
              later.request.case === "settle"
                ? settle(later.request.value, sub.dispatcher)
                : V.check([
                    {
                      field: later.request.case === "subscribe" ? "subscribe" : "settle",
                      description:
                        later.request.case === "subscribe"
                          ? "only the first request subscribes"
                          : "is required after the first request",
                    },
                  ]),
            ),
            Effect.exit,
            Effect.flatMap((exit) => Deferred.done(ended, exit)),
            Effect.forkScoped,
          );
          const subscribed: ConsumeItem = {
            response: { case: "subscribed", value: sub.subscribed },
          };
          return Stream.concat(
            Stream.make(subscribed),
            batchesOf(sub.queue, sub.maxInFlight).pipe(
              Stream.map(
                (batch): ConsumeItem => ({
                  response: { case: "deliveries", value: { deliveries: batch } },
                }),
              ),
            ),
          ).pipe(Stream.interruptWhen(Deferred.await(ended)));
        }),
      );

    const unknownDelivery = (deliveryId: string) =>
      new NotFound({
        message: "no delivery in flight with this id (already settled, or never delivered here)",
        metadata: { delivery_id: deliveryId.slice(0, 256) },
      });

    const ack = (req: AckRequest) =>
      Effect.gen(function* () {
        const ids = req.deliveryId === "" ? req.deliveryIds : [req.deliveryId, ...req.deliveryIds];
        yield* V.check(
          ids.length === 0 ? [{ field: "delivery_id", description: "is required" }] : [],
          V.maxItems("delivery_ids", ids, MAX_ACKS),
          ...ids.map((id, i) => V.label(`delivery_ids[${i}]`, id, 256)),
        );
        // Acks are the hot path: no arrays per id, the first unknown id is enough.
        let unknown: string | undefined;
        const held = holdAll();
        try {
          for (const id of ids) {
            // Late acks are NOT_FOUND here, as they always were: the caller learns it was too slow.
            if (settleIn(undefined, (d) => d.ack(id)) !== "settled") unknown ??= id;
          }
        } finally {
          releaseAll(held);
        }
        if (unknown !== undefined) return yield* unknownDelivery(unknown);
        return {};
      });

    /**
     * Around settling many deliveries: the room they free is filled once,
     * at the end, so the next response carries a batch again.
     */
    const holdAll = (): Dispatcher[] => {
      const held: Dispatcher[] = [];
      for (const g of groups.values()) {
        g.dispatcher.hold();
        held.push(g.dispatcher);
      }
      return held;
    };
    const releaseAll = (held: ReadonlyArray<Dispatcher>) => {
      for (const d of held) d.release();
    };

    /**
     * Settles a delivery in the group that handed it out, trying `first`
     * (the caller's own) before the others. `settled` also for a superseded
     * id, whose ack is a no-op.
     */
    const settleIn = (
      first: Dispatcher | undefined,
      f: (d: Dispatcher) => SettleResult,
    ): "settled" | "late" | "unknown" => {
      let late = false;
      if (first !== undefined) {
        const result = f(first);
        if (result === "settled" || result === "superseded") return "settled";
        late = result === "late";
      }
      for (const g of groups.values()) {
        if (g.dispatcher === first) continue;
        const result = f(g.dispatcher);
        if (result === "settled" || result === "superseded") return "settled";
        if (result === "late") late = true;
      }
      return late ? "late" : "unknown";
    };

    /**
     * A Consume stream's settlement: everything is validated first; then
     * each known id settled, late ones skipped (their message was handed out
     * again), and NOT_FOUND names the first unknown one. Nacks do not wait for
     * a dead-letter write: the record stays uncommitted until it is done.
     */
    const settle = (req: ConsumeSettle, own: Dispatcher) =>
      Effect.gen(function* () {
        const delays = req.nacks.map((n, i) =>
          durationField(`settle.nacks[${i}].delay`, n.delay, { fallback: 0, min: 0, max: HOUR }),
        );
        yield* V.check(
          req.ackIds.length + req.nacks.length > MAX_ACKS
            ? [{ field: "settle", description: `at most ${MAX_ACKS} acks and nacks in all` }]
            : [],
          idViolations("settle.ack_ids", req.ackIds),
          ...req.nacks.flatMap((n, i) => [
            V.label(`settle.nacks[${i}].delivery_id`, n.deliveryId, 256),
            V.label(`settle.nacks[${i}].reason`, n.reason, 1000, false),
          ]),
          ...delays.map((d) => d.violations),
        );
        let unknown: string | undefined;
        const held = holdAll();
        try {
          for (const id of req.ackIds) {
            if (settleIn(own, (d) => d.ack(id)) === "unknown") unknown ??= id;
          }
          req.nacks.forEach((n, i) => {
            const reason = n.reason === "" ? "nacked" : n.reason;
            const delayMs = delays[i]?.ms ?? 0;
            if (settleIn(own, (d) => d.nack(n.deliveryId, reason, delayMs).result) === "unknown")
              unknown ??= n.deliveryId;
          });
        } finally {
          releaseAll(held);
        }
        if (unknown !== undefined) return yield* unknownDelivery(unknown);
      });

    const nack = (req: NackRequest) =>
      Effect.gen(function* () {
        const delay = durationField("delay", req.delay, { fallback: 0, min: 0, max: HOUR });
        yield* V.check(
          V.label("delivery_id", req.deliveryId, 256),
          V.label("reason", req.reason, 1000, false),
          delay.violations,
        );
        for (const g of groups.values()) {
          const { result, deadLettered } = g.dispatcher.nack(
            req.deliveryId,
            req.reason === "" ? "nacked" : req.reason,
            delay.ms,
          );
          if (result === "unknown" || result === "late") continue;
          if (deadLettered) yield* Effect.promise(() => deadLettered);
          return { deadLettered: deadLettered !== undefined };
        }
        return yield* unknownDelivery(req.deliveryId);
      });

    /** What the bus's gauges report: open subscriptions, unacked deliveries, unfinished records. */
    const stats = () => {
      let subscriptions = 0;
      let inFlight = 0;
      let unfinished = 0;
      for (const g of groups.values()) {
        subscriptions += g.dispatcher.size;
        inFlight += g.dispatcher.load.inFlight;
        unfinished += g.dispatcher.load.unfinished;
      }
      return { subscriptions, inFlight, unfinished };
    };

    return { subscribe, consume, ack, nack, stats };
  });
