/**
 * The shape every DataStore watch stream has: subscribe to the change feed,
 * send a snapshot, a SNAPSHOT_COMPLETE marker, then each change (skipping
 * ones the snapshot already showed), and a heartbeat at least every 30 s.
 * Subscribing before reading the snapshot means no change can fall between
 * the two.
 */
import { Effect, Option, Queue, Schedule, Stream } from "effect";
import { type Change, ChangeFeed, type Topic } from "./changes.js";
import type { Doc, StoreUnavailable } from "./store.js";

export const WATCH_HEARTBEAT = "25 seconds";

export interface WatchSpec<Item> {
  readonly topic: Topic;
  readonly snapshot: Effect.Effect<ReadonlyArray<Doc>, StoreUnavailable>;
  /** Which records this watcher wants. */
  readonly matches: (doc: Doc) => boolean;
  /** Record identity. */
  readonly id: (doc: Doc) => string;
  /** Whether a change is old news given the record as last sent (e.g. its revision is not newer). */
  readonly isStale: (change: Change, known: Doc) => boolean;
  readonly onSnapshot: (doc: Doc) => Item;
  readonly snapshotComplete: Item;
  /** The item for a change, or undefined to send nothing. */
  readonly onChange: (change: Change, known: ReadonlyMap<string, Doc>) => Item | undefined;
  readonly heartbeat: Item;
  /** Whether a change removed the record (default: op `delete`); it is then forgotten. */
  readonly removes?: (change: Change) => boolean;
  /** Extra items derived from the known records over time (e.g. lease expiry). */
  readonly ticks?: (known: Map<string, Doc>) => Stream.Stream<Item, StoreUnavailable>;
}

export const watch = <Item>(
  spec: WatchSpec<Item>,
): Stream.Stream<Item, StoreUnavailable, ChangeFeed> =>
  Stream.unwrapScoped(
    Effect.gen(function* () {
      const feed = yield* ChangeFeed;
      const queue = yield* feed.subscribe;
      const known = new Map<string, Doc>();
      const snapshot = (yield* spec.snapshot).filter(spec.matches);
      for (const doc of snapshot) known.set(spec.id(doc), doc);

      const changes = Stream.repeatEffect(Queue.take(queue)).pipe(
        Stream.filter((c) => c.topic === spec.topic && spec.matches(c.doc)),
        Stream.filterMap((change) => {
          const id = spec.id(change.doc);
          const before = known.get(id);
          // A write the snapshot (or an earlier change) already showed.
          if (before && spec.isStale(change, before)) return Option.none();
          const item = spec.onChange(change, known);
          if (spec.removes ? spec.removes(change) : change.op === "delete") known.delete(id);
          else known.set(id, change.doc);
          return Option.fromNullable(item);
        }),
      );
      const heartbeats = Stream.fromSchedule(Schedule.spaced(WATCH_HEARTBEAT)).pipe(
        Stream.as(spec.heartbeat),
      );
      const live = Stream.mergeAll(
        [changes, heartbeats, ...(spec.ticks ? [spec.ticks(known)] : [])],
        {
          concurrency: "unbounded",
        },
      );
      return Stream.concat(
        Stream.fromIterable([...snapshot.map(spec.onSnapshot), spec.snapshotComplete]),
        live,
      );
    }),
  );
