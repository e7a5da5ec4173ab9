/**
 * `consume`: one kafkajs consumer (one group member) per call, with
 * commits left to the caller (`autoCommit: false`).
 *
 * - Assignment: kafkajs joins and syncs, then reports the member's whole
 *   assignment (GROUP_JOIN); its first fetch then resolves where each
 *   partition starts (committed offset, else the earliest or the end).
 *   `onAssigned` runs after that fetch, so `consume` succeeds once "the end"
 *   is fixed, and no record of the assignment is handed over before it
 *   completed. On a rebalance kafkajs revokes everything (eager protocol)
 *   and reads again from the committed offsets.
 * - Records: each batch is one partition's, handed over one record at a
 *   time, or all at once to `onRecords` when given (a fetch brings hundreds
 *   of small records, and each handover runs a fiber and a keep-alive
 *   timer); the next waits for the handler to complete, then its offset is
 *   resolved (kafkajs' next fetch position; nothing is committed). While
 *   `onRecord` runs the session is kept alive (heartbeat every second); it
 *   is interrupted when the member stops, its group rebalances or the scope
 *   closes (the record comes again from the committed offset). A defect in
 *   `onRecord` is logged and the record handed over again a second later.
 * - Commits count only for partitions of the current assignment; others
 *   (and any made during a rebalance) are ignored, as a commit of the old
 *   generation is refused by the broker anyway.
 * - Failures: kafkajs restarts a consumer whose retries are spent (it
 *   leaves and joins again); a consumer that stops for an error kafkajs
 *   does not retry is restarted here after `RESTART_DELAY_MS`.
 * - Closing the scope interrupts the handlers, then leaves the group and
 *   disconnects (bounded).
 */
import { Cause, Deferred, Effect, Exit, Runtime, type Scope } from "effect";
import type { ConsumerRunConfig, EachBatchPayload, Consumer as KafkaConsumer } from "kafkajs";
import {
  type ConsumeHandlers,
  type ConsumeOptions,
  type Consumer,
  type LogRecord,
  StoreUnavailable,
  type TopicPartition,
} from "../log.js";
import {
  CONSUMER_RETRY,
  call,
  closeConsumer,
  hasErrorType,
  JOIN_TIMEOUT,
  type KafkaClient,
  timedOut,
} from "./client.js";
import { fromMessage } from "./records.js";

/** How often a member waiting on a handler sends a heartbeat. */
const KEEPALIVE_MS = 1_000;
/** How long a record whose `onRecord` died waits before it is handed over again. */
const REDELIVERY_DELAY_MS = 1_000;
/** How long a consumer stopped by a non-retriable error waits before it starts again. */
const RESTART_DELAY_MS = 5_000;
/** Partitions one member hands over at once (each in order). */
const MAX_CONCURRENT_PARTITIONS = 64;

/** Commit errors meaning "not yours any more": the new owner reads from the last commit. */
const NOT_OWNER = [
  "REBALANCE_IN_PROGRESS",
  "ILLEGAL_GENERATION",
  "UNKNOWN_MEMBER_ID",
  "FENCED_INSTANCE_ID",
];

const tpKey = (topic: string, partition: number) => `${partition}@${topic}`;

/** `promise`'s value, or undefined after `ms`. */
const within = <A>(promise: Promise<A>, ms: number): Promise<A | undefined> => {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    }),
  ]).finally(() => clearTimeout(timer));
};

type Outcome = "done" | "failed" | "stopped";

export const makeConsume =
  (client: KafkaClient) =>
  (
    options: ConsumeOptions,
    handlers: ConsumeHandlers,
  ): Effect.Effect<Consumer, StoreUnavailable, Scope.Scope> =>
    Effect.gen(function* () {
      const runtime = yield* Effect.runtime<never>();
      const runSync = Runtime.runSync(runtime);
      const firstAssignment = yield* Deferred.make<void, StoreUnavailable>();

      let closing = false;
      /** Partitions of the current assignment (empty during a rebalance). */
      let owned = new Set<string>();
      /** Assignment reported by the last join, waiting for the first fetch to position it. */
      let joined: ReadonlyArray<TopicPartition> | undefined;
      /** The last `onAssigned` (they run in order); batches wait for it. */
      let assigned: Promise<void> = Promise.resolve();
      let restartTimer: ReturnType<typeof setTimeout> | undefined;
      /** Whether the member stopped since it last joined (its stops are logged once). */
      let down = false;
      /** Handler effects running, by their interrupter. */
      const handling = new Map<AbortController, Promise<Exit.Exit<void>>>();

      /** Runs a handler's effect on the caller's runtime; `stop` interrupts it. */
      const start = (effect: Effect.Effect<void>) => {
        const controller = new AbortController();
        const exit = Runtime.runPromiseExit(runtime)(effect, { signal: controller.signal });
        handling.set(controller, exit);
        void exit.finally(() => handling.delete(controller));
        return {
          exit,
          stop: async () => {
            controller.abort();
            await exit;
          },
        };
      };

      const logCause = (message: string, exit: Exit.Exit<void>) => {
        if (Exit.isFailure(exit)) {
          runSync(Effect.logError(`message log (kafka): ${message}`, exit.cause));
        }
      };

      const consumer: KafkaConsumer = client.kafka.consumer({
        groupId: options.group,
        sessionTimeout: 10_000,
        rebalanceTimeout: 10_000,
        heartbeatInterval: 1_000,
        // Fetches wait at most this long for records (a record arriving ends the wait).
        maxWaitTimeInMs: 100,
        maxBytesPerPartition: client.maxMessageBytes,
        maxBytes: Math.max(10 * 1024 * 1024, 2 * client.maxMessageBytes),
        allowAutoTopicCreation: false,
        // kafkajs restarts a consumer whose retries are spent, unless it is being closed.
        retry: { ...CONSUMER_RETRY, restartOnFailure: async () => !closing },
      });
      /** The latest `run` (settles once joined, or once the join failed). */
      let run: Promise<void> = Promise.resolve();

      // -- assignment
      consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
        const assignment = Object.entries(payload.memberAssignment)
          .flatMap(([topic, partitions]) => partitions.map((partition) => ({ topic, partition })))
          .sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition);
        owned = new Set(assignment.map((tp) => tpKey(tp.topic, tp.partition)));
        joined = assignment;
        if (down) {
          down = false;
          runSync(
            Effect.logInfo(
              `message log (kafka): the member of group ${options.group} joined again`,
            ),
          );
        }
      });
      consumer.on(consumer.events.FETCH, () => {
        const assignment = joined;
        if (assignment === undefined) return;
        joined = undefined;
        assigned = assigned
          .then(async () => {
            if (closing) return;
            const exit = await start(handlers.onAssigned(assignment)).exit;
            if (Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)) {
              logCause("onAssigned failed", exit);
            }
            Deferred.unsafeDone(firstAssignment, Exit.void);
          })
          .catch((error: unknown) => {
            runSync(
              Effect.logError("message log (kafka): handing over an assignment failed", error),
            );
          });
      });
      consumer.on(consumer.events.REBALANCING, () => {
        owned = new Set();
        forgetLags();
      });
      // Consumer lag as kafkajs reports it after each fetched batch (high watermark - next offset).
      const lagKeys = new Set<string>();
      const forgetLags = () => {
        for (const key of lagKeys) client.lags.delete(key);
        lagKeys.clear();
      };
      consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
        if (!owned.has(tpKey(payload.topic, payload.partition))) return;
        const key = `${options.group}\u0000${tpKey(payload.topic, payload.partition)}`;
        lagKeys.add(key);
        client.lags.set(key, {
          group: options.group,
          topic: payload.topic,
          partition: payload.partition,
          lag: Math.max(0, Number(payload.offsetLag)),
        });
      });

      // -- failures
      const runConfig: ConsumerRunConfig = {
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: Math.min(
          MAX_CONCURRENT_PARTITIONS,
          Math.max(1, client.options.partitions * options.topics.length),
        ),
        eachBatch: (payload) => eachBatch(payload),
      };
      const restart = () => {
        restartTimer = undefined;
        if (closing) return;
        run = consumer
          .connect()
          .then(() => consumer.run(runConfig))
          .catch((error: unknown) => {
            runSync(Effect.logWarning("message log (kafka): restarting a consumer failed", error));
            if (!closing) restartTimer = setTimeout(restart, RESTART_DELAY_MS);
          });
      };
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        owned = new Set();
        joined = undefined;
        const first = runSync(Deferred.isDone(firstAssignment));
        if (!payload.restart && !first) {
          Deferred.unsafeDone(
            firstAssignment,
            Exit.fail(new StoreUnavailable({ cause: payload.error })),
          );
          return;
        }
        if (closing) return;
        const message = `message log (kafka): the member of group ${options.group} stopped; ${
          payload.restart ? "kafkajs restarts it" : `restarting it in ${RESTART_DELAY_MS} ms`
        }`;
        runSync(
          down
            ? Effect.logDebug(message, payload.error)
            : Effect.logWarning(message, payload.error),
        );
        down = true;
        if (!payload.restart) restartTimer ??= setTimeout(restart, RESTART_DELAY_MS);
      });

      // -- records
      /** Waits for `promise`, heartbeating; undefined when the member stopped meanwhile. */
      const waitFor = async <A>(
        promise: Promise<A>,
        heartbeat: () => Promise<void>,
        stopped: () => boolean,
      ): Promise<A | undefined> => {
        for (;;) {
          const settled = await within(
            promise.then((value) => ({ value })),
            KEEPALIVE_MS,
          );
          if (settled !== undefined) return settled.value;
          if (stopped()) return undefined;
          await heartbeat();
        }
      };

      const handOver = async (
        records: ReadonlyArray<LogRecord>,
        heartbeat: () => Promise<void>,
        stopped: () => boolean,
      ): Promise<Outcome> => {
        const first = records[0] as LogRecord;
        const handler = start(
          handlers.onRecords ? handlers.onRecords(records) : handlers.onRecord(first),
        );
        try {
          const exit = await waitFor(handler.exit, heartbeat, stopped);
          if (exit === undefined || closing) return "stopped";
          if (Exit.isSuccess(exit)) return "done";
          logCause(
            `onRecord failed on ${first.topic}/${first.partition}@${first.offset}; handing it over again`,
            exit,
          );
          return "failed";
        } finally {
          // A no-op once it completed; else (stopped, or a heartbeat found a rebalance) interrupted.
          await handler.stop();
        }
      };

      const eachBatch = async ({
        batch,
        resolveOffset,
        heartbeat,
        isRunning,
        isStale,
      }: EachBatchPayload) => {
        const stopped = () => closing || !isRunning() || isStale();
        await waitFor(assigned, heartbeat, stopped);
        // With onRecords the whole batch is one handover, else each record is.
        const steps = handlers.onRecords
          ? [batch.messages]
          : batch.messages.map((message) => [message]);
        for (const messages of steps) {
          const last = messages[messages.length - 1];
          if (stopped() || last === undefined) return;
          const records = messages.map((m) => fromMessage(batch.topic, batch.partition, m));
          for (;;) {
            const outcome = await handOver(records, heartbeat, stopped);
            if (outcome === "stopped") return;
            if (outcome === "done") break;
            const pause = new Promise((resolve) => setTimeout(resolve, REDELIVERY_DELAY_MS));
            await waitFor(pause, heartbeat, stopped);
            if (stopped()) return;
          }
          resolveOffset(last.offset);
          await heartbeat();
        }
      };

      // -- lifecycle
      yield* Effect.addFinalizer(() =>
        Effect.gen(function* () {
          closing = true;
          owned = new Set();
          forgetLags();
          clearTimeout(restartTimer);
          yield* Effect.promise(() =>
            Promise.all(
              [...handling].map(([controller, exit]) => {
                controller.abort();
                return exit;
              }),
            ),
          );
          yield* closeConsumer(consumer, () => run);
        }),
      );

      yield* call("consumer connect", () => consumer.connect(), client.sendTimeout);
      yield* call(
        "consumer subscribe",
        () =>
          consumer.subscribe({ topics: [...options.topics], fromBeginning: options.fromBeginning }),
        client.sendTimeout,
      );
      run = consumer.run(runConfig).catch((cause: unknown) => {
        Deferred.unsafeDone(firstAssignment, Exit.fail(new StoreUnavailable({ cause })));
      });
      yield* Deferred.await(firstAssignment).pipe(
        Effect.timeoutFail({
          duration: JOIN_TIMEOUT,
          onTimeout: timedOut(`joining group ${options.group}`, JOIN_TIMEOUT),
        }),
      );

      const commit: Consumer["commit"] = (commits) =>
        Effect.suspend(() => {
          const mine = commits.filter((c) => owned.has(tpKey(c.topic, c.partition)));
          if (mine.length === 0 || closing) return Effect.void;
          return call(
            "commit",
            () =>
              consumer.commitOffsets(
                mine.map((c) => ({
                  topic: c.topic,
                  partition: c.partition,
                  offset: String(c.offset),
                })),
              ),
            client.sendTimeout,
          ).pipe(
            Effect.catchIf(
              (e) => hasErrorType(e.cause, ...NOT_OWNER),
              (e) =>
                Effect.logDebug(
                  "message log (kafka): commit ignored, the group is being rebalanced",
                  e.cause,
                ),
            ),
          );
        });

      return { commit };
    });
