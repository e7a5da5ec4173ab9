/**
 * Compare-and-set of a record: Hazelcast's `replaceIfSame` is atomic but
 * drops TTL and max idle, and no conditional call sets them (a follow-up
 * `set` would not be conditional; entry processors need our code on the
 * members). So a change takes the member-side lock of the key (`IMap.tryLock`
 * with a lease), reads the record, decides and writes with `set`, then
 * unlocks. Other clients' writes to a locked key wait on the member. The Node
 * client shares lock ownership among all calls of one client (a second
 * `tryLock` from the same client succeeds), so calls in this process are
 * serialized per address by a local mutex as well (changes, create and
 * remove take it). Guarantee: of two writers with the same expected
 * revision exactly one wins, as long as the critical section (bounded by
 * `CRITICAL_SECTION`) ends within the lock's lease (`KEY_LOCK_LEASE_MS`);
 * the lease frees the key if this process dies or loses the cluster
 * mid-way. A lock granted after this side stopped waiting for it (timed
 * out, interrupted) is released as soon as it comes. The unlock is not
 * waited for: a change answers after its `set`, and a later call of this
 * client on the key goes behind the unlock (and would take the lock again
 * even before it, the lock being this client's).
 *
 * Both bounds here are per call, not raced against the work: a timeout race
 * forks a fiber and a timer, which is a measurable part of a write's CPU.
 */
import { Duration, Effect, Exit } from "effect";
import type { HazelcastJsonValue, IMap } from "hazelcast-client";
import { StoreUnavailable } from "../store.js";
import { type Cluster, OP_TIMEOUT, timedOut } from "./client.js";

/** How long an update waits on the member for another instance's lock of the key. */
const KEY_LOCK_WAIT_MS = 2_000;
/** Lease of the key lock: frees the key if its holder dies; well above CRITICAL_SECTION. */
const KEY_LOCK_LEASE_MS = 15_000;
/** Bound of everything a change does while it holds the key lock. */
const CRITICAL_SECTION = Duration.seconds(8);

/**
 * The time a call inside the critical section may take: what is left of it,
 * at most `OP_TIMEOUT`; fails once nothing is left.
 */
export type TimeLeft = Effect.Effect<Duration.Duration, StoreUnavailable>;

/** Calls of this client on one address: the one running, and those waiting in turn. */
interface Slot {
  /** Someone runs (or has just been handed the address). */
  held: boolean;
  /** Wakes of the waiting calls, in the order they came. */
  readonly waiting: Array<() => void>;
  /** The running call and the waiting ones. */
  users: number;
}

const CRITICAL_SECTION_MS = Duration.toMillis(CRITICAL_SECTION);
/** Bound of the lock and the read after it: a call, and the lock's wait on the member. */
const LOCK_AND_READ_TIMEOUT = Duration.sum(OP_TIMEOUT, Duration.millis(KEY_LOCK_WAIT_MS));
const OP_TIMEOUT_MS = Duration.toMillis(OP_TIMEOUT);

export const makeKeyLocks = ({ onMeta, fire }: Cluster) => {
  const localLocks = new Map<string, Slot>();

  /** The address goes to the next waiting call, or is free. */
  const leave = (address: string, slot: Slot) => {
    const next = slot.waiting.shift();
    if (next === undefined) slot.held = false;
    else next();
    if (--slot.users === 0) localLocks.delete(address);
  };

  /**
   * Waits, bounded, until the running call hands the address over. However
   * the wait ends, the caller settles it with `settle` (in an
   * uninterruptible region): the address taken or passed on, or the line
   * left. A hand-over that comes as the wait is given up is passed on there.
   */
  const turn = (address: string, slot: Slot) => {
    let handed = false;
    const wake = () => {
      handed = true;
      resumeWait?.(Effect.void);
    };
    let resumeWait: ((effect: Effect.Effect<void>) => void) | undefined;
    slot.waiting.push(wake);
    const wait = Effect.async<void>((resume) => {
      if (handed) resume(Effect.void);
      else resumeWait = resume;
    }).pipe(
      Effect.timeoutFail({
        duration: OP_TIMEOUT,
        onTimeout: () =>
          new StoreUnavailable({
            cause: new Error(
              `earlier calls on ${address} still running after ${Duration.format(OP_TIMEOUT)}`,
            ),
          }),
      }),
    );
    const settle = (exit: Exit.Exit<void, StoreUnavailable>) =>
      Effect.sync(() => {
        if (Exit.isSuccess(exit)) return;
        const at = slot.waiting.indexOf(wake);
        if (at >= 0) slot.waiting.splice(at, 1);
        if (handed) leave(address, slot);
        else if (--slot.users === 0) localLocks.delete(address);
      });
    return { wait, settle };
  };

  /**
   * Runs `effect` alone among this client's calls on `address` (the
   * member's key lock cannot tell them apart), in the order they came.
   * Waiting for the others is bounded too (StoreUnavailable), so calls
   * piling up on one address while the cluster is slow or away do not wait
   * for each other's timeouts. A call alone on its address (nearly always)
   * runs at once: no semaphore, no timer.
   */
  const serialized =
    (address: string) =>
    <A, E, R>(effect: Effect.Effect<A, E | StoreUnavailable, R>) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          let slot = localLocks.get(address);
          if (slot === undefined) {
            slot = { held: false, waiting: [], users: 0 };
            localLocks.set(address, slot);
          }
          const taken = slot;
          taken.users++;
          const run = restore(effect).pipe(
            Effect.ensuring(Effect.sync(() => leave(address, taken))),
          );
          if (!taken.held) {
            taken.held = true;
            return run;
          }
          const { wait, settle } = turn(address, taken);
          return restore(wait).pipe(Effect.onExit(settle), Effect.zipRight(run));
        }),
      );

  /**
   * Runs `effect` holding the member-side lock of the record's key, given
   * what `read` found under it (see the module comment). The lock and the
   * read are one bounded call: the read is sent as soon as the lock is
   * granted, with no fiber step in between. Each call `effect` makes takes
   * its bound from `timeLeft`, so the whole stays within
   * `CRITICAL_SECTION`. The unlock is sent once `effect` ends and is not
   * waited for: the key's next call from this client goes behind it on the
   * member, and a lost unlock is a lost unlock today too (the lease frees
   * the key). `garbage` names the bytes `effect`'s result no longer refers
   * to: they are deleted in the unlock's socket write.
   */
  const withKeyLock = <V, A, E>(
    address: string,
    what: string,
    read: (meta: IMap<string, HazelcastJsonValue>) => Promise<V>,
    effect: (found: V, timeLeft: TimeLeft) => Effect.Effect<A, E | StoreUnavailable>,
    garbage: (result: A) => string | undefined = () => undefined,
  ): Effect.Effect<A, E | StoreUnavailable> => {
    // The lock of the current attempt: granted, released (once), and whether the caller stopped waiting.
    let held = false;
    let released = false;
    let givenUp = false;
    const release = (dataKey?: string) => {
      if (!held || released) return;
      released = true;
      if (dataKey === undefined) fire("unlock", (meta) => meta.unlock(address));
      else {
        fire("unlock, deleting replaced bytes", (meta, data) =>
          Promise.all([meta.unlock(address), data.delete(dataKey)]),
        );
      }
    };
    const locked = onMeta(
      `tryLock, ${what}`,
      async (m): Promise<{ found: V } | undefined> => {
        held = false;
        released = false;
        if (!(await m.tryLock(address, KEY_LOCK_WAIT_MS, KEY_LOCK_LEASE_MS))) return undefined;
        held = true;
        if (givenUp) {
          release();
          return undefined;
        }
        try {
          const found = await read(m);
          if (givenUp) release();
          return { found };
        } catch (error) {
          release();
          throw error;
        }
      },
      LOCK_AND_READ_TIMEOUT,
    );
    return Effect.uninterruptibleMask((restore) =>
      restore(locked).pipe(
        Effect.onExit((exit) =>
          Exit.isSuccess(exit)
            ? Effect.void
            : Effect.sync(() => {
                // Timed out or interrupted: a lock granted from now on is released at once.
                givenUp = true;
                release();
              }),
        ),
        Effect.flatMap((lock) => {
          if (lock === undefined) {
            return Effect.fail(
              new StoreUnavailable({
                cause: new Error(
                  `${address} stayed locked by another mesh instance for ${KEY_LOCK_WAIT_MS} ms`,
                ),
              }),
            );
          }
          return Effect.clockWith((clock) => {
            const deadline = clock.unsafeCurrentTimeMillis() + CRITICAL_SECTION_MS;
            const timeLeft: TimeLeft = Effect.suspend(() => {
              const left = deadline - clock.unsafeCurrentTimeMillis();
              return left <= 0
                ? Effect.fail(timedOut("update", CRITICAL_SECTION)())
                : Effect.succeed(left < OP_TIMEOUT_MS ? Duration.millis(left) : OP_TIMEOUT);
            });
            return restore(effect(lock.found, timeLeft)).pipe(
              Effect.onExit((exit) =>
                Effect.sync(() => release(Exit.isSuccess(exit) ? garbage(exit.value) : undefined)),
              ),
            );
          });
        }),
      ),
    );
  };

  return { serialized, withKeyLock };
};
