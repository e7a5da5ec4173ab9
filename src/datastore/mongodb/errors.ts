/**
 * Driver errors: those meaning "cannot reach / timed out / not primary"
 * become StoreUnavailable; a duplicate `_id` on insert is `false`; anything
 * else is a defect.
 */
import { Effect } from "effect";
import {
  MongoClientClosedError,
  type Collection as MongoCollection,
  MongoError,
  MongoNetworkError,
  MongoNotConnectedError,
  MongoOperationTimeoutError,
  MongoServerClosedError,
  MongoServerError,
  MongoServerSelectionError,
  MongoTopologyClosedError,
} from "mongodb";
import { StoreUnavailable } from "../store.js";
import type { Stored } from "./codec.js";

/** Server codes meaning "not reachable right now": network, shutdown, elections, time limits. */
const UNAVAILABLE_CODES = new Set([
  6, // HostUnreachable
  7, // HostNotFound
  // AuthenticationFailed: credentials are deployment state, not a bug in the caller; the
  // cause is logged and the mesh reports UNAVAILABLE instead of failing every call as INTERNAL.
  18,
  50, // MaxTimeMSExpired
  89, // NetworkTimeout
  91, // ShutdownInProgress
  133, // FailedToSatisfyReadPreference
  134, // ReadConcernMajorityNotAvailableYet
  189, // PrimarySteppedDown
  202, // NetworkInterfaceExceededTimeLimit
  262, // ExceededTimeLimit
  9001, // SocketException
  10058, // LegacyNotPrimary
  10107, // NotWritablePrimary
  11600, // InterruptedAtShutdown
  11602, // InterruptedDueToReplStateChange
  13435, // NotPrimaryNoSecondaryOk
  13436, // NotPrimaryOrSecondary
]);
const UNAVAILABLE_LABELS = ["RetryableWriteError", "SystemOverloadedError", "ResetPool"];

const isUnavailable = (e: unknown): boolean =>
  e instanceof MongoNetworkError || // includes socket timeouts and cleared pools
  e instanceof MongoServerSelectionError ||
  e instanceof MongoOperationTimeoutError ||
  e instanceof MongoNotConnectedError ||
  // Closed by our own release while a call was in flight (shutdown): the store is gone.
  e instanceof MongoTopologyClosedError ||
  e instanceof MongoClientClosedError ||
  e instanceof MongoServerClosedError ||
  (e instanceof MongoError &&
    (e.name === "MongoWaitQueueTimeoutError" ||
      e.name === "MongoPoolClosedError" ||
      (typeof e.code === "number" && UNAVAILABLE_CODES.has(e.code)) ||
      UNAVAILABLE_LABELS.some((label) => e.hasErrorLabel(label))));

export const isDuplicateKey = (e: unknown): boolean =>
  e instanceof MongoServerError && e.code === 11000;

/**
 * Runs one driver call. Everything that builds the request belongs inside
 * `op`, so a bug there (a bad path) is a defect like any other.
 */
export const run = <A>(op: () => Promise<A>): Effect.Effect<A, StoreUnavailable> =>
  Effect.tryPromise({ try: op, catch: (e) => e }).pipe(
    Effect.catchAll((e) =>
      isUnavailable(e) ? Effect.fail(new StoreUnavailable({ cause: e })) : Effect.die(e),
    ),
  );

/** Inserts; false when the `_id` exists already. */
export const insertOne = (
  coll: MongoCollection<Stored>,
  doc: Stored,
): Effect.Effect<boolean, StoreUnavailable> =>
  run(() =>
    coll.insertOne(doc).then(
      () => true,
      (e: unknown) => {
        if (isDuplicateKey(e)) return false;
        throw e;
      },
    ),
  );
