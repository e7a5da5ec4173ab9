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
 * mid-way. A lock request that times out here but is granted late on the
 * member keeps the key locked until its lease ends (other instances'
 * writes to that address wait or fail with StoreUnavailable meanwhile).
 *
 * Both bounds here are per call, not raced against the work: a timeout race
 * forks a fiber and a timer, which is a measurable part of a write's CPU.
 */
import { Duration, Effect, Exit } from "effect";
import { StoreUnavailable } from "../store.js";
import { bestEffort, type Cluster, OP_TIMEOUT, timedOut } from "./client.js";
import { now } from "./stored.js";

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

export const makeKeyLocks = ({ onMeta, onMetaAndData }: Cluster) => {
  const localLocks = new Map<string, { readonly mutex: Effect.Semaphore; users: number }>();

  /**
   * Runs `effect` alone among this client's calls on `address` (the
   * member's key lock cannot tell them apart). Waiting for the others is
   * bounded too (StoreUnavailable), so calls piling up on one address while
   * the cluster is slow or away do not wait for each other's timeouts.
   */
  const serialized =
    (address: string) =>
    <A, E, R>(effect: Effect.Effect<A, E | StoreUnavailable, R>) =>
      Effect.acquireUseRelease(
        Effect.sync(() => {
          let slot = localLocks.get(address);
          if (slot === undefined) {
            slot = { mutex: Effect.unsafeMakeSemaphore(1), users: 0 };
            localLocks.set(address, slot);
          }
          slot.users++;
          return slot;
        }),
        (slot) => {
          // Alone on the address (every user counts from before its take to after its
          // release): the permit is free, so there is no wait to bound.
          const take = slot.mutex.take(1);
          const bounded =
            slot.users === 1
              ? take
              : take.pipe(
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
          return Effect.uninterruptibleMask((restore) =>
            restore(bounded).pipe(
              Effect.zipRight(restore(effect).pipe(Effect.ensuring(slot.mutex.release(1)))),
            ),
          );
        },
        (slot) =>
          Effect.sync(() => {
            if (--slot.users === 0) localLocks.delete(address);
          }),
      );

  /**
   * Runs `effect` holding the member-side lock of the record's key (see the
   * module comment). Each call `effect` makes takes its bound from
   * `timeLeft`, so the whole stays within `CRITICAL_SECTION`. `garbage`
   * names the bytes `effect`'s result no longer refers to: they are deleted
   * in the unlock's round trip.
   */
  const withKeyLock = <A, E>(
    address: string,
    effect: (timeLeft: TimeLeft) => Effect.Effect<A, E | StoreUnavailable>,
    garbage: (result: A) => string | undefined = () => undefined,
  ): Effect.Effect<A, E | StoreUnavailable> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function* () {
        const locked = yield* restore(
          onMeta(
            "tryLock",
            (m) => m.tryLock(address, KEY_LOCK_WAIT_MS, KEY_LOCK_LEASE_MS),
            Duration.sum(OP_TIMEOUT, Duration.millis(KEY_LOCK_WAIT_MS)),
          ),
        );
        if (!locked) {
          return yield* Effect.fail(
            new StoreUnavailable({
              cause: new Error(
                `${address} stayed locked by another mesh instance for ${KEY_LOCK_WAIT_MS} ms`,
              ),
            }),
          );
        }
        const deadline = (yield* now) + Duration.toMillis(CRITICAL_SECTION);
        const timeLeft: TimeLeft = Effect.flatMap(now, (at) =>
          at < deadline
            ? Effect.succeed(Duration.min(OP_TIMEOUT, Duration.millis(deadline - at)))
            : Effect.fail(timedOut("update", CRITICAL_SECTION)()),
        );
        return yield* restore(effect(timeLeft)).pipe(
          Effect.onExit((exit) => {
            const dataKey = Exit.isSuccess(exit) ? garbage(exit.value) : undefined;
            return dataKey === undefined
              ? bestEffort(
                  "unlock",
                  onMeta("unlock", (m) => m.unlock(address)),
                )
              : bestEffort(
                  "unlock, deleting replaced bytes",
                  onMetaAndData("unlock, delete", (meta, data) =>
                    Promise.all([meta.unlock(address), data.delete(dataKey)]),
                  ),
                );
          }),
        );
      }),
    );

  return { serialized, withKeyLock };
};
