/**
 * Failing fast while the cluster is known to be unreachable.
 *
 * kafkajs tries a refused connection for about 2.5 s (`CLIENT_RETRY`) before
 * it gives up, and concurrent calls share a producer's pending connect: with
 * the broker killed, every other publish waited for its caller's deadline
 * (DEADLINE_EXCEEDED at 2 s) and the next one failed with the shared
 * connect's error, so callers saw UNAVAILABLE only half the time (found by
 * test/faults/kafka.test.ts, the broker killed under load).
 *
 * So the cluster counts as unreachable once an operation failed for want
 * of a connection (kafkajs exhausted its retries on a connection error: no
 * broker it tried answered) or the ping failed (the MessageBus health is
 * then NOT_SERVING); `gate`d operations then fail at once with
 * StoreUnavailable, until an operation or the ping succeeds. The ping is
 * never gated (`probe`): the health check every 2 s is what finds the
 * cluster back, and calls go through again as the health turns SERVING.
 * Without pings (the log used on its own) one call a second goes through
 * to find out.
 */
import { Effect } from "effect";
import { StoreUnavailable } from "../log.js";
import { causeChain } from "./client.js";

/** kafkajs' errors for "could not connect / the connection dropped". */
const CONNECTION_ERRORS = ["KafkaJSConnectionError", "KafkaJSConnectionClosedError"];

/** Whether `e`, or an error it was caused by, is a connection error. */
const isConnectionError = (e: unknown): boolean =>
  causeChain(e).some(({ name }) => typeof name === "string" && CONNECTION_ERRORS.includes(name));

/**
 * While unreachable and nobody pings (the log used without its health
 * check), one call in this long is let through to find the cluster back.
 */
const RETRY_MS = 1_000;
/** A ping this recent will find the cluster back: no call is let through. */
const PINGED_MS = 5_000;

export const makeReachability = () => {
  /** The failure that made the cluster unreachable, while it is. */
  let lost: { readonly cause: unknown } | undefined;
  /** When a call was last let through while unreachable, and when the last ping started. */
  let triedAt = 0;
  let pingedAt = Number.NEGATIVE_INFINITY;

  const reached = Effect.sync(() => {
    lost = undefined;
  });
  const unreachable = (cause: unknown) =>
    Effect.sync(() => {
      lost = { cause };
    });

  /** The health ping: never gated, it decides either way. */
  const probe = (
    ping: Effect.Effect<void, StoreUnavailable>,
  ): Effect.Effect<void, StoreUnavailable> =>
    Effect.suspend(() => {
      pingedAt = Date.now();
      return ping.pipe(
        Effect.tap(() => reached),
        Effect.tapError((e) => unreachable(e.cause)),
      );
    });

  /**
   * `effect`, or StoreUnavailable at once while the cluster is unreachable
   * (but for one call a second when nobody pings).
   */
  const gate = <A, R>(
    effect: Effect.Effect<A, StoreUnavailable, R>,
  ): Effect.Effect<A, StoreUnavailable, R> =>
    Effect.suspend(() => {
      const now = Date.now();
      if (lost !== undefined && (now - pingedAt < PINGED_MS || now - triedAt < RETRY_MS)) {
        return Effect.fail(
          new StoreUnavailable({
            cause: new Error("the Kafka cluster is unreachable (no broker accepted a connection)", {
              cause: lost.cause,
            }),
          }),
        );
      }
      if (lost !== undefined) triedAt = now;
      return effect.pipe(
        Effect.tap(() => reached),
        Effect.tapError((e) => (isConnectionError(e.cause) ? unreachable(e.cause) : Effect.void)),
      );
    });

  return { gate, probe };
};
