/**
 * A driver call (a promise) as an Effect, bounded in time. The backends' hot
 * paths make one of these per operation, so it is a single `Effect.async`
 * whose bound shares a timer with the calls due with it (and a timer of its
 * own while it waits to try again) rather than `tryPromise`
 * + `retry` + `timeoutFail`: those fork a fiber and race a scheduled sleep
 * on every call, which measured about a third of the CPU of a MemoryManager
 * Read on Hazelcast (bench/). The call is made in the same turn, with no
 * promise in between.
 */
import { performance } from "node:perf_hooks";
import { Duration, Effect } from "effect";

export interface BoundedCall<A, E> {
  /** The call; `signal` aborts when it is given up (timed out or interrupted). */
  readonly op: (signal: AbortSignal) => Promise<A>;
  /**
   * False when `op` never reads its signal: it then gets one that never
   * aborts, and no AbortController is made (one per call cost about as much
   * as the rest of this), and no canceler: interrupted, the call runs its
   * course, and clears its bound when it settles.
   */
  readonly abortable?: false;
  readonly timeout: Duration.DurationInput;
  /** The failure when the bound passes, given the last error an attempt had (if any). */
  readonly onTimeout: (lastError: unknown) => E;
  /** What a rejection becomes: a failure, or a defect (a bug of ours or the driver's). */
  readonly onError: (error: unknown) => Effect.Effect<never, E>;
  /** Milliseconds before trying again after this rejection, within the bound; undefined: do not. */
  readonly retryAfter?: (error: unknown) => number | undefined;
}

const NEVER_ABORTED = new AbortController().signal;

/**
 * How late a bound may fire: bounds due in the same slot of this many ms
 * share one timer, so a busy store arms a few dozen timers a second instead
 * of one per call (a timer armed and cleared per call was ~3 % of a Read's
 * CPU on Hazelcast).
 */
const SLOT_MS = 25;

interface Slot {
  readonly due: Set<() => void>;
  readonly timer: ReturnType<typeof setTimeout>;
}
const slots = new Map<number, Slot>();

/** Runs `expire` `ms` from now (at most SLOT_MS later); the function returned cancels it. */
const expireAfter = (ms: number, expire: () => void): (() => void) => {
  const now = performance.now();
  const end = Math.ceil((now + ms) / SLOT_MS) * SLOT_MS;
  let slot = slots.get(end);
  if (slot === undefined) {
    const due = new Set<() => void>();
    const timer = setTimeout(() => {
      slots.delete(end);
      for (const f of due) f();
    }, end - now);
    slot = { due, timer };
    slots.set(end, slot);
  }
  const mine = slot;
  mine.due.add(expire);
  return () => {
    // The last one out stops the timer: an idle process keeps none armed.
    if (mine.due.delete(expire) && mine.due.size === 0 && slots.get(end) === mine) {
      clearTimeout(mine.timer);
      slots.delete(end);
    }
  };
};

export const boundedCall = <A, E>(call: BoundedCall<A, E>): Effect.Effect<A, E> =>
  Effect.async<A, E>((resume) => {
    const controller = call.abortable === false ? undefined : new AbortController();
    const signal = controller?.signal ?? NEVER_ABORTED;
    let settled = false;
    let lastError: unknown;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const stop = () => {
      settled = true;
      cancelBound();
      if (retry !== undefined) clearTimeout(retry);
    };
    const cancelBound = expireAfter(Duration.toMillis(call.timeout), () => {
      if (settled) return;
      stop();
      controller?.abort();
      resume(Effect.fail(call.onTimeout(lastError)));
    });
    const succeeded = (value: A) => {
      if (settled) return;
      stop();
      resume(Effect.succeed(value));
    };
    const failed = (error: unknown) => {
      if (settled) return;
      lastError = error;
      const delay = call.retryAfter?.(error);
      if (delay !== undefined) {
        retry = setTimeout(attempt, delay);
        return;
      }
      stop();
      resume(call.onError(error));
    };
    const attempt = () => {
      retry = undefined;
      let sent: Promise<A>;
      try {
        sent = call.op(signal);
      } catch (error) {
        // A call that throws synchronously is a rejection like any other.
        sent = Promise.reject(error);
      }
      sent.then(succeeded, failed);
    };
    attempt();
    // A canceler makes Effect wrap the call in an interruption handler: several steps, and
    // (in-process) 11 of the 45 µs of CPU a Read through the Hazelcast store took. Only a
    // call that can be aborted gets one; another, when interrupted, runs its course (or to
    // its bound) unheard, as the fiber ignores a resume once it was interrupted.
    if (controller === undefined) return;
    return Effect.sync(() => {
      if (settled) return;
      stop();
      controller.abort();
    });
  });
