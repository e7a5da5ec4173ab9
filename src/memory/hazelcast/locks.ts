/**
 * Locks in `locks`: resource → `{ holder, expireTime }`, taken with
 * `putIfAbsent` (with the lease as TTL), renewed by the holder with
 * `replaceIfSame` + `setTtl`, released with remove-if-equal. The lease is
 * checked against `expireTime` in the value (this instance's clock), so
 * leases below a second work; the TTL only removes what nobody releases.
 * The guarantee is lease-based mutual exclusion among instances whose
 * clocks agree; there are no fencing tokens (the CP subsystem's FencedLock
 * is not in Hazelcast Community 5.5+).
 */
import { Effect } from "effect";
import { type MemoryStoreShape, StoreUnavailable, type UnlockResult } from "../store.js";
import { bestEffort, type Cluster, MAX_ATTEMPTS } from "./client.js";
import { json, memberMillis, now, parse } from "./stored.js";

interface LockValue {
  readonly holder: string;
  readonly expireTime: number;
}

export const makeLockStore = ({
  onLocks,
}: Cluster): Pick<MemoryStoreShape, "tryLock" | "unlock"> => ({
  tryLock: (resource, holder, leaseMs) =>
    Effect.gen(function* () {
      let last: LockValue | undefined;
      for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
        const at = yield* now;
        const mine: LockValue = { holder, expireTime: at + leaseMs };
        const ttl = memberMillis(leaseMs);
        const existing = yield* onLocks("putIfAbsent", (m) =>
          m.putIfAbsent(resource, json(mine), ttl),
        );
        if (existing === null) return { acquired: true, expireTime: mine.expireTime };
        const current = parse<LockValue>(existing);
        last = current;
        if (current.expireTime <= at) {
          // Lapsed but not yet removed by the member: remove exactly that value, try again.
          yield* onLocks("remove", (m) => m.remove(resource, existing));
          continue;
        }
        if (current.holder !== holder) return { acquired: false, expireTime: current.expireTime };
        // Renewal: replace exactly the value read (atomic), then the TTL that replace dropped.
        if (
          yield* onLocks("replaceIfSame", (m) => m.replaceIfSame(resource, existing, json(mine)))
        ) {
          // Should this fail, the value's expireTime still ends the lease; only the cleanup waits.
          yield* bestEffort(
            "renewing a lock's TTL",
            onLocks("setTtl", (m) => m.setTtl(resource, ttl)),
          );
          return { acquired: true, expireTime: mine.expireTime };
        }
      }
      // Contended throughout: somebody else keeps changing it.
      return { acquired: false, expireTime: last?.expireTime ?? (yield* now) };
    }),

  unlock: (resource, holder) =>
    Effect.gen(function* () {
      for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
        const existing = yield* onLocks("get", (m) => m.get(resource));
        if (existing === null) return "missing" as UnlockResult;
        const current = parse<LockValue>(existing);
        if (current.expireTime <= (yield* now)) {
          // Lapsed: nobody holds it; removing exactly that value changes nothing for anyone.
          yield* bestEffort(
            "removing a lapsed lock",
            onLocks("remove", (m) => m.remove(resource, existing)),
          );
          return "missing" as UnlockResult;
        }
        if (current.holder !== holder) return "others" as UnlockResult;
        if (yield* onLocks("remove", (m) => m.remove(resource, existing))) {
          return "unlocked" as UnlockResult;
        }
        // Renewed or lapsed meanwhile: look again.
      }
      return yield* Effect.fail(
        new StoreUnavailable({ cause: new Error(`the lock on ${resource} kept changing`) }),
      );
    }),
});
