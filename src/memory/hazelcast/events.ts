/**
 * The event stream: one entry listener on `meta` per store, published to
 * the store's subscribers. Entry listeners see every client's changes
 * (Hazelcast 5.6, measured): added, updated, removed, expired and evicted
 * (both `expired` here), with the value (or the old value) when registered
 * with `includeValue`. Events are lost while the client is disconnected
 * (the client registers the listener again when it reconnects).
 *
 * `updated` events come from a second listener, registered only while the
 * store has subscribers: every write of every instance is one, and with
 * the value each costs the member an event and this client a decode, for
 * nobody when no one watches (measured on a 1 KiB Write: ~20 µs of the
 * mesh's ~600, 10-20 % of the member's CPU). The expiry watch does
 * without them: a write only pushes an entry's expiry later, and the
 * check it made due too early finds the later time on the member (as for
 * reads, which restart max idle with no event). Both listeners' events of
 * a key come in the order they happened: the member sends a key's events
 * to a client from one thread, in order.
 */
import {
  Cause,
  Deferred,
  Duration,
  Effect,
  Exit,
  PubSub,
  Queue,
  Runtime,
  Schedule,
  type Scope,
} from "effect";
import type { EntryEvent, HazelcastJsonValue } from "hazelcast-client";
import { type StoreEvent, StoreUnavailable } from "../store.js";
import { bestEffort, type Cluster, OP_TIMEOUT } from "./client.js";
import type { ExpiryWatch } from "./expiry.js";
import { parse, recordOf, type StoredMeta } from "./stored.js";

/** Events kept for the slowest subscriber (older ones are dropped). */
const EVENT_BUFFER = 16_384;

export interface Events {
  /** Registers the listener, retrying in the background until the cluster is there. */
  readonly register: Effect.Effect<void, StoreUnavailable>;
  readonly subscribe: Effect.Effect<Queue.Dequeue<StoreEvent>, StoreUnavailable, Scope.Scope>;
}

/** The events of the store; each change is also shown to the expiry watch. */
export const makeEvents = ({ onMeta }: Cluster, expiry: ExpiryWatch) =>
  Effect.gen(function* () {
    const pubsub = yield* Effect.acquireRelease(
      PubSub.sliding<StoreEvent>(EVENT_BUFFER),
      PubSub.shutdown,
    );
    const runtime = yield* Effect.runtime<never>();
    const clock = yield* Effect.clock;
    let closed = false;
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true;
      }),
    );

    const publish = (type: StoreEvent["type"], event: EntryEvent<string, HazelcastJsonValue>) => {
      if (closed) return;
      const value = type === "created" || type === "updated" ? event.value : event.oldValue;
      let stored: StoredMeta | undefined;
      try {
        stored = value == null ? undefined : parse<StoredMeta>(value);
      } catch {
        stored = undefined; // not ours: still report the change of the key
      }
      const time = clock.unsafeCurrentTimeMillis();
      expiry.observe(type, event.key, stored, time);
      const storeEvent: StoreEvent = {
        type,
        address: event.key,
        ...(stored === undefined ? {} : { record: recordOf(stored) }),
        time,
      };
      // Nearly always there is room (the buffer is large): offered at once, no fiber run per
      // event. Full (the sliding buffer drops the oldest) or shut down: as a publish.
      if (Queue.unsafeOffer(pubsub, storeEvent)) return;
      const exit = Runtime.runSyncExit(runtime)(PubSub.publish(pubsub, storeEvent));
      if (Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)) {
        Runtime.runFork(runtime)(
          Effect.logWarning("memory store: publishing an event failed", exit.cause),
        );
      }
    };

    /** Completed once the meta map's listener is registered (one per layer, re-registered by the client on reconnect). */
    const listening = yield* Deferred.make<void>();

    // The update listener: registered by the first subscriber, removed with the last one.
    const updates = yield* Effect.makeSemaphore(1);
    let subscribers = 0;
    let updatesId: string | undefined;
    const followUpdates = updates.withPermits(1)(
      Effect.suspend(() => {
        const counted = Effect.sync(() => {
          subscribers++;
        });
        if (updatesId !== undefined) return counted;
        return onMeta("addEntryListener (updates)", (m) =>
          m.addEntryListener({ updated: (e) => publish("updated", e) }, undefined, true),
        ).pipe(
          Effect.flatMap((id) => {
            updatesId = id;
            return counted;
          }),
        );
      }),
    );
    const unfollowUpdates = updates.withPermits(1)(
      Effect.suspend(() => {
        const id = updatesId;
        if (--subscribers > 0 || id === undefined) return Effect.void;
        updatesId = undefined;
        return bestEffort(
          "removing the update listener",
          onMeta("removeEntryListener", (m) => m.removeEntryListener(id)),
        );
      }),
    );

    const result: Events = {
      register: onMeta("addEntryListener", (m) =>
        m.addEntryListener(
          {
            added: (e) => publish("created", e),
            removed: (e) => publish("removed", e),
            expired: (e) => publish("expired", e),
            evicted: (e) => publish("expired", e),
          },
          undefined,
          true,
        ),
      ).pipe(
        Effect.tap(() => Deferred.succeed(listening, undefined)),
        Effect.tapError((e) =>
          Effect.logDebug("memory store (hazelcast): listener not registered yet", e.cause),
        ),
        // The cluster may be down at start: keep trying until it is there.
        Effect.retry(
          Schedule.exponential(Duration.millis(250)).pipe(
            Schedule.union(Schedule.spaced(Duration.seconds(5))),
          ),
        ),
        Effect.asVoid,
      ),
      subscribe: Deferred.await(listening).pipe(
        Effect.timeoutFail({
          duration: OP_TIMEOUT,
          onTimeout: () =>
            new StoreUnavailable({
              cause: new Error("the Hazelcast entry listener is not registered yet"),
            }),
        }),
        // Updates flow before the subscription exists: none made after it is missed.
        Effect.zipRight(Effect.acquireRelease(followUpdates, () => unfollowUpdates)),
        Effect.zipRight(PubSub.subscribe(pubsub)),
      ),
    };
    return result;
  });
