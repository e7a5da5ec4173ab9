/**
 * The change feed behind the watch streams. MongoDB change streams are not
 * available on every deployment (FerretDB has none), so every write that a
 * watcher cares about also appends a numbered record to the `changes`
 * collection, and one poller per process reads new records and fans them out.
 * Because the records live in the shared database, a watcher sees writes
 * made through any mesh instance.
 *
 * Sequence numbers are taken before the record is written, so records can
 * become visible out of order; the poller waits up to GAP_GRACE for a missing
 * number before moving past it. A process that dies between its write and
 * the record loses that one event (the data itself is written); snapshots on
 * reconnect repair a watcher's view.
 */
import { Context, Duration, Effect, Layer, PubSub, type Queue, Schedule, type Scope } from "effect";
import { now, pad } from "./common.js";
import { type Doc, DocStore, type StoreUnavailable } from "./store.js";

export type Topic = "service" | "parameter";

export interface Change {
  readonly seq: number;
  readonly topic: Topic;
  /** What happened, in the topic's own words (`put`, `delete`, `renewed`…). */
  readonly op: string;
  /** The record after the change (for a delete, its last state). */
  readonly doc: Doc;
}

export interface ChangeFeedShape {
  /** Records a change; call it after the write it describes has succeeded. */
  readonly publish: (topic: Topic, op: string, doc: Doc) => Effect.Effect<void, StoreUnavailable>;
  /** Every change from now on, until the scope closes. */
  readonly subscribe: Effect.Effect<Queue.Dequeue<Change>, never, Scope.Scope>;
}

export class ChangeFeed extends Context.Tag("fo/datastore/ChangeFeed")<
  ChangeFeed,
  ChangeFeedShape
>() {}

const GAP_GRACE_MS = 5_000;
const RETENTION = Duration.minutes(10);
const BATCH = 1000;
/** A watcher this far behind loses the oldest changes rather than growing memory without bound. */
const SUBSCRIBER_BUFFER = 16_384;

export const ChangeFeedLive = (pollInterval: Duration.Duration) =>
  Layer.scoped(
    ChangeFeed,
    Effect.gen(function* () {
      const store = yield* DocStore;
      const changes = store.collection("changes");
      const pubsub = yield* PubSub.sliding<Change>(SUBSCRIBER_BUFFER);

      // Everything up to `low` has been delivered or given up on; `seen` holds delivered seqs above it.
      let low: number | undefined;
      const seen = new Set<number>();
      const gapSince = new Map<number, number>();

      const latestSeq = changes
        .find({ where: [], sort: { path: "seq", descending: true }, limit: 1 })
        .pipe(Effect.map(([d]) => (d?.seq as number | undefined) ?? 0));

      const poll = Effect.gen(function* () {
        if (low === undefined) {
          low = yield* latestSeq; // watchers only need changes after they subscribed
          return;
        }
        const batch = yield* changes.find({
          where: [{ path: "seq", op: "gt", value: low }],
          sort: { path: "seq", descending: false },
          limit: BATCH,
        });
        for (const d of batch) {
          const seq = d.seq as number;
          if (seen.has(seq)) continue;
          seen.add(seq);
          yield* PubSub.publish(pubsub, {
            seq,
            topic: d.topic as Topic,
            op: d.op as string,
            doc: d.doc as Doc,
          });
        }
        const at = yield* now;
        const highest = Math.max(low, ...seen);
        while (low < highest) {
          const n: number = low + 1;
          if (seen.delete(n)) {
            low = n;
            continue;
          }
          const since = gapSince.get(n) ?? at;
          gapSince.set(n, since);
          if (at - since < GAP_GRACE_MS) break;
          gapSince.delete(n);
          low = n;
        }
      });

      yield* poll.pipe(
        Effect.catchAll((e) => Effect.logDebug("change feed poll failed; retrying", e.cause)),
        Effect.repeat(Schedule.spaced(pollInterval)),
        Effect.forkScoped,
      );
      yield* Effect.gen(function* () {
        yield* changes.removeWhere([
          { path: "at", op: "lt", value: (yield* now) - Duration.toMillis(RETENTION) },
        ]);
      }).pipe(
        Effect.catchAll(() => Effect.void),
        Effect.repeat(Schedule.spaced(Duration.minutes(1))),
        Effect.forkScoped,
      );

      return {
        publish: (topic, op, doc) =>
          Effect.gen(function* () {
            const seq = yield* store.nextSequence("changes");
            yield* changes.insert({ _id: pad(seq), seq, topic, op, doc, at: yield* now });
          }),
        subscribe: PubSub.subscribe(pubsub),
      };
    }),
  );
