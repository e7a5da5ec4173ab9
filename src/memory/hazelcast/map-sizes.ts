/**
 * Entries per map of the Hazelcast store, for the MemoryManager's
 * `memory.map.entries` gauge.
 *
 * `IMap.size()` is a cluster round trip, and a metrics collection (a scrape
 * of `/metrics`, an OTLP export) must not wait on a slow or absent cluster.
 * So a collection starts a poll of the four sizes (unless one runs, or the
 * last is under `MIN_POLL_INTERVAL` old), waits for it at most `WAIT`, and
 * reports the last sizes polled: fresh on a healthy cluster, the previous
 * ones while a poll is slow (it goes on in the background, bounded by
 * `POLL_TIMEOUT`), none once they are older than `MAX_AGE` (a cluster that
 * has been away that long has no size worth showing).
 *
 * This module imports nothing from the Hazelcast client at run time: the
 * MemoryManager service refers to the tag without loading the client.
 */
import { Clock, Context, Duration, Effect, Fiber } from "effect";
import type { Cluster, OnMap } from "./client.js";

export interface MapSize {
  /** The map's role in the store: `meta`, `data`, `branches` or `locks`. */
  readonly map: string;
  readonly entries: number;
}

/**
 * The map sizes of the Hazelcast store, offered next to the MemoryStore by
 * that backend only, so the MemoryManager service registers the gauge when
 * both it and Telemetry are there.
 */
export class MemoryMapSizes extends Context.Tag("fo/memory/MemoryMapSizes")<
  MemoryMapSizes,
  {
    /** The last sizes polled; waits at most `WAIT` for a fresh poll, never fails. */
    readonly current: Effect.Effect<ReadonlyArray<MapSize>>;
  }
>() {}

/** Bound of each size call (the store's own calls allow 3 s). */
const POLL_TIMEOUT = Duration.seconds(2);
/** Longest a collection waits for a fresh poll. */
const WAIT = Duration.millis(250);
/** Collections closer together than this share one poll (scrapers and exporters may overlap). */
const MIN_POLL_INTERVAL = Duration.seconds(1);
/** Sizes older than this are no longer reported. */
const MAX_AGE = Duration.minutes(1);

/** Polls the store's maps on `cluster`; a poll in flight is interrupted with the scope. */
export const makeMapSizes = (cluster: Cluster) =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope;
    const maps: ReadonlyArray<readonly [string, OnMap<unknown>]> = [
      ["meta", cluster.onMeta],
      ["data", cluster.onData],
      ["branches", cluster.onBranches],
      ["locks", cluster.onLocks],
    ];
    let last: { readonly at: number; readonly sizes: ReadonlyArray<MapSize> } | undefined;
    let polling: Fiber.RuntimeFiber<void> | undefined;

    const poll = Effect.forEach(
      maps,
      ([map, on]) =>
        on("size", (m) => m.size(), POLL_TIMEOUT).pipe(Effect.map((entries) => ({ map, entries }))),
      { concurrency: "unbounded" },
    ).pipe(
      Effect.flatMap((sizes) =>
        Effect.flatMap(Clock.currentTimeMillis, (at) =>
          Effect.sync(() => {
            last = { at, sizes };
          }),
        ),
      ),
      // Keeps the previous sizes: the health check reports the cluster's state, not the gauge.
      Effect.catchAllCause((cause) =>
        Effect.logDebug("memory store (hazelcast): polling map sizes failed", cause),
      ),
    );

    /** The poll in flight, or a new one unless the last sizes are recent enough. */
    const startPoll = (now: number) =>
      Effect.suspend(() => {
        // A fiber that is done (even before it was recorded here) is not in flight.
        if (polling !== undefined && polling.unsafePoll() === null) return Effect.succeed(polling);
        if (last !== undefined && now - last.at < Duration.toMillis(MIN_POLL_INTERVAL))
          return Effect.succeed(undefined);
        return Effect.forkIn(poll, scope).pipe(
          Effect.tap((fiber) => {
            polling = fiber;
          }),
        );
      });

    const current = Effect.gen(function* () {
      const fiber = yield* startPoll(yield* Clock.currentTimeMillis);
      if (fiber !== undefined) yield* Fiber.await(fiber).pipe(Effect.timeout(WAIT), Effect.ignore);
      const now = yield* Clock.currentTimeMillis;
      return last !== undefined && now - last.at <= Duration.toMillis(MAX_AGE) ? last.sizes : [];
    });
    return { current };
  });
