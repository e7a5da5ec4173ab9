/**
 * Expiry watch. Queries skip expired entries without removing them, and
 * `size()` still counts them (Hazelcast 5.6, measured). The member's own
 * task may report an untouched expired entry a minute or more late (it
 * visits min(27, 3 × partition threads) of the 271 partitions per 5 s
 * round), but any keyed access finds an expired entry at once and expires
 * it (removal and `expired` event, as usual). So each store tracks the live
 * entries it has heard of (from the events, and one listing at start) with
 * the earliest time each may expire, and then looks at it with
 * `getEntryView` (which does not touch it): gone means expired by the
 * member just now; still there gives the member's own expiration time, the
 * next time to look. So `expired` events come within ~1-2 s. Every instance
 * does this for every entry: one call per entry and instance per expiry
 * (and per max idle renewal by reads). Entries created while this client
 * was disconnected are left to the member's task.
 */
import { Duration, Effect, Runtime, Schedule } from "effect";
import { Predicates } from "hazelcast-client";
import type { MemoryRecord, StoreEvent } from "../store.js";
import { bestEffort, type Cluster, PARALLEL } from "./client.js";
import { asLong, NO_LIMIT, now, parse, type StoredMeta } from "./stored.js";

/** How often due expiry checks run, and how many at most per round (see `sweepExpired`). */
const SWEEP_INTERVAL = Duration.millis(500);
const SWEEP_BATCH = 2_000;
/** The one listing of all entries at start. */
const LISTING_TIMEOUT = Duration.seconds(30);

export interface ExpiryWatch {
  /** Follows a change of an entry, as the entry listener reported it. */
  readonly observe: (
    type: StoreEvent["type"],
    address: string,
    stored: StoredMeta | undefined,
    time: number,
  ) => void;
  /** Lists the entries from before once, then checks the due ones for ever. */
  readonly run: Effect.Effect<unknown>;
}

export const makeExpiryWatch = ({ onMeta, onData }: Cluster) =>
  Effect.gen(function* () {
    const runtime = yield* Effect.runtime<never>();
    const clock = yield* Effect.clock;

    const expiryChecks = new Map<string, number>();
    const watchExpiry = (record: MemoryRecord, at: number) => {
      expiryChecks.set(
        record.address,
        Math.min(record.expireTime, record.maxIdleMs > 0 ? at + record.maxIdleMs : NO_LIMIT),
      );
    };

    const checkExpiry = (address: string) =>
      onMeta("getEntryView", (m) => m.getEntryView(address)).pipe(
        Effect.flatMap((view) =>
          Effect.sync(() => {
            if (view === null) expiryChecks.delete(address);
            // `expirationTime` is inclusive: gone from that millisecond on.
            else if (expiryChecks.has(address)) {
              expiryChecks.set(address, asLong(view.expirationTime));
            }
          }),
        ),
      );

    const sweepExpired = Effect.gen(function* () {
      const at = yield* now;
      const due: string[] = [];
      for (const [address, checkAt] of expiryChecks) {
        if (checkAt <= at) due.push(address);
        if (due.length >= SWEEP_BATCH) break;
      }
      yield* Effect.forEach(due, checkExpiry, { concurrency: PARALLEL, discard: true });
    }).pipe(
      Effect.catchAllCause((cause) =>
        Effect.logDebug("memory store (hazelcast): expiry check failed", cause),
      ),
    );

    /** The bytes of an entry that expired, removed now rather than when the member gets round to them. */
    const dropBytes = (dataKey: string) =>
      Runtime.runFork(runtime)(
        bestEffort(
          "deleting the bytes of an expired entry",
          onData("delete", (m) => m.delete(dataKey)),
        ),
      );

    /** Entries from before: their expiry is watched too (listed once; a failure leaves them to the member). */
    const watchExisting = onMeta(
      "valuesWithPredicate",
      (m) => m.valuesWithPredicate(Predicates.alwaysTrue()).then((list) => list.toArray()),
      LISTING_TIMEOUT,
    ).pipe(
      Effect.flatMap((values) =>
        Effect.sync(() => {
          // How long they have been idle is unknown: look at each one soon.
          const at = clock.unsafeCurrentTimeMillis();
          for (const v of values) {
            try {
              const { address } = parse<StoredMeta>(v);
              if (!expiryChecks.has(address)) expiryChecks.set(address, at);
            } catch {
              // not ours
            }
          }
        }),
      ),
      Effect.catchAllCause((cause) =>
        Effect.logDebug("memory store (hazelcast): listing entries at start failed", cause),
      ),
    );

    const watch: ExpiryWatch = {
      observe: (type, address, stored, time) => {
        if (type === "created" || type === "updated") {
          if (stored !== undefined) watchExpiry(stored, time);
        } else {
          expiryChecks.delete(address);
          if (type === "expired" && stored?._data !== undefined) dropBytes(stored._data);
        }
      },
      run: watchExisting.pipe(
        Effect.zipRight(Effect.repeat(sweepExpired, Schedule.spaced(SWEEP_INTERVAL))),
      ),
    };
    return watch;
  });
