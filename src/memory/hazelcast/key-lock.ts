/**
 * Compare-and-set of a record: Hazelcast's `replaceIfSame` is atomic but
 * drops TTL and max idle (and a follow-up `set` would not be conditional),
 * so an update takes the member-side lock of the key (`IMap.tryLock` with a
 * lease), reads the record, checks the revision and writes with `set`, then
 * unlocks. Other clients' writes to a locked key wait on the member. The Node
 * client shares lock ownership among all calls of one client (a second
 * `tryLock` from the same client succeeds), so calls in this process are
 * serialized per address by a local mutex as well (update, create and
 * remove take it). Guarantee: of two writers with the same expected
 * revision exactly one wins, as long as the critical section (bounded by
 * `CRITICAL_SECTION`) ends within the lock's lease (`KEY_LOCK_LEASE_MS`);
 * the lease frees the key if this process dies or loses the cluster
 * mid-way. A lock request that times out here but is granted late on the
 * member keeps the key locked until its lease ends (other instances'
 * writes to that address wait or fail with StoreUnavailable meanwhile).
 */
import { Duration, Effect } from "effect";
import { StoreUnavailable } from "../store.js";
import { bestEffort, type Cluster, OP_TIMEOUT, timedOut } from "./client.js";

/** How long an update waits on the member for another instance's lock of the key. */
const KEY_LOCK_WAIT_MS = 2_000;
/** Lease of the key lock: frees the key if its holder dies; well above CRITICAL_SECTION. */
const KEY_LOCK_LEASE_MS = 15_000;
/** Bound of everything an update does while it holds the key lock. */
const CRITICAL_SECTION = Duration.seconds(8);

export const makeKeyLocks = ({ onMeta }: Cluster) => {
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
        (slot) =>
          Effect.uninterruptibleMask((restore) =>
            restore(slot.mutex.take(1)).pipe(
              Effect.timeoutFail({
                duration: OP_TIMEOUT,
                onTimeout: () =>
                  new StoreUnavailable({
                    cause: new Error(
                      `earlier calls on ${address} still running after ${Duration.format(OP_TIMEOUT)}`,
                    ),
                  }),
              }),
              Effect.zipRight(restore(effect).pipe(Effect.ensuring(slot.mutex.release(1)))),
            ),
          ),
        (slot) =>
          Effect.sync(() => {
            if (--slot.users === 0) localLocks.delete(address);
          }),
      );

  /** Runs `effect` holding the member-side lock of the record's key (see the module comment). */
  const withKeyLock = <A>(
    address: string,
    effect: Effect.Effect<A, StoreUnavailable>,
  ): Effect.Effect<A, StoreUnavailable> =>
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
        return yield* restore(
          effect.pipe(
            Effect.timeoutFail({
              duration: CRITICAL_SECTION,
              onTimeout: timedOut("update", CRITICAL_SECTION),
            }),
          ),
        ).pipe(
          Effect.ensuring(
            bestEffort(
              "unlock",
              onMeta("unlock", (m) => m.unlock(address)),
            ),
          ),
        );
      }),
    );

  return { serialized, withKeyLock };
};
