/**
 * Locks on memory addresses or named resources, with Dapr's unlock outcomes.
 * The guarantee is lease-based mutual exclusion: a holder keeps the lock
 * until it unlocks or its lease lapses; there are no fencing tokens (the
 * Hazelcast CP subsystem that would give them is not in Community 5.5+), so
 * work that can outlive its lease must check it still holds the lock.
 */
import { durationMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Duration, Effect } from "effect";
import type {
  TryLockRequest,
  UnlockRequest,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { UnlockResponse_Status as UnlockStatus } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import type { LockResource } from "../../gen/floworchestrator/memory/v1/memory_pb.js";
import type { InvalidArgument } from "../common/errors.js";
import * as V from "../common/validate.js";
import { parseText } from "./address.js";
import { unavailable } from "./common.js";
import type { MemoryStoreShape, UnlockResult } from "./store.js";

const DEFAULT_LEASE_MS = 30_000;
const MIN_LEASE_MS = 100;
const MAX_LEASE_MS = 3_600_000;
const MAX_WAIT_MS = 60_000;
/** Pause between attempts while waiting for a held lock. */
const RETRY = Duration.millis(50);

const holderChecks = (holder: string): V.Violations => V.label("holder", holder, 256);

/** The key a resource is locked under; addresses and names never collide. */
const resourceKey = (
  resource: LockResource | undefined,
): Effect.Effect<string, InvalidArgument> => {
  const kind = resource?.kind;
  if (kind?.case === "address")
    return parseText("resource.address", kind.value).pipe(Effect.as(`address:${kind.value}`));
  if (kind?.case === "name") {
    return V.check(V.label("resource.name", kind.value, 512)).pipe(Effect.as(`name:${kind.value}`));
  }
  return V.invalid("resource", "is required (address or name)");
};

const statuses: Record<UnlockResult, UnlockStatus> = {
  unlocked: UnlockStatus.UNLOCKED,
  missing: UnlockStatus.LOCK_DOES_NOT_EXIST,
  others: UnlockStatus.LOCK_BELONGS_TO_OTHERS,
};

export const makeLocks = (store: MemoryStoreShape) => {
  const tryLock = (req: TryLockRequest) =>
    unavailable(
      Effect.gen(function* () {
        const key = yield* resourceKey(req.resource);
        const leaseMs = req.lease ? durationMs(req.lease) : DEFAULT_LEASE_MS;
        const waitMs = req.waitTimeout ? durationMs(req.waitTimeout) : 0;
        yield* V.check(
          holderChecks(req.holder),
          leaseMs < MIN_LEASE_MS || leaseMs > MAX_LEASE_MS
            ? [{ field: "lease", description: "must be between 100 ms and 1 h" }]
            : [],
          waitMs < 0 || waitMs > MAX_WAIT_MS
            ? [{ field: "wait_timeout", description: "must be between 0 and 60 s" }]
            : [],
        );
        const attempt = store.tryLock(key, req.holder, leaseMs);
        const deadline = (yield* Effect.clockWith((c) => c.currentTimeMillis)) + waitMs;
        for (;;) {
          const result = yield* attempt;
          const at = yield* Effect.clockWith((c) => c.currentTimeMillis);
          if (result.acquired)
            return { acquired: true, expireTime: timestampFromMs(result.expireTime) };
          if (at >= deadline) return { acquired: false };
          yield* Effect.sleep(Duration.min(RETRY, Duration.millis(deadline - at)));
        }
      }),
    );

  const unlock = (req: UnlockRequest) =>
    unavailable(
      Effect.gen(function* () {
        const key = yield* resourceKey(req.resource);
        yield* V.check(holderChecks(req.holder));
        return { status: statuses[yield* store.unlock(key, req.holder)] };
      }),
    );

  return { tryLock, unlock };
};
