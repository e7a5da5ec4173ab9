/**
 * A driver call (a promise) as an Effect, bounded in time. The backends' hot
 * paths make one of these per operation, so it is a single `Effect.async`
 * with two timers rather than `tryPromise` + `retry` + `timeoutFail`: those
 * fork a fiber and race a scheduled sleep on every call, which measured
 * about a third of the CPU of a MemoryManager Read on Hazelcast (bench/).
 */
import { Duration, Effect } from "effect";

export interface BoundedCall<A, E> {
  /** The call; `signal` aborts when it is given up (timed out or interrupted). */
  readonly op: (signal: AbortSignal) => Promise<A>;
  readonly timeout: Duration.DurationInput;
  /** The failure when the bound passes, given the last error an attempt had (if any). */
  readonly onTimeout: (lastError: unknown) => E;
  /** What a rejection becomes: a failure, or a defect (a bug of ours or the driver's). */
  readonly onError: (error: unknown) => Effect.Effect<never, E>;
  /** Milliseconds before trying again after this rejection, within the bound; undefined: do not. */
  readonly retryAfter?: (error: unknown) => number | undefined;
}

export const boundedCall = <A, E>(call: BoundedCall<A, E>): Effect.Effect<A, E> =>
  Effect.async<A, E>((resume) => {
    const controller = new AbortController();
    let settled = false;
    let lastError: unknown;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const stop = () => {
      settled = true;
      clearTimeout(bound);
      clearTimeout(retry);
    };
    const settle = (result: Effect.Effect<A, E>, giveUp = false) => {
      if (settled) return;
      stop();
      if (giveUp) controller.abort();
      resume(result);
    };
    const bound = setTimeout(
      () => settle(Effect.fail(call.onTimeout(lastError)), true),
      Duration.toMillis(call.timeout),
    );
    const attempt = () => {
      // Inside `then`: a call that throws synchronously is a rejection like any other.
      Promise.resolve(controller.signal)
        .then(call.op)
        .then(
          (value) => settle(Effect.succeed(value)),
          (error: unknown) => {
            lastError = error;
            const delay = settled ? undefined : call.retryAfter?.(error);
            if (delay === undefined) settle(call.onError(error));
            else retry = setTimeout(attempt, delay);
          },
        );
    };
    attempt();
    return Effect.sync(() => {
      if (settled) return;
      stop();
      controller.abort();
    });
  });
