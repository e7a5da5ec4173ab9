/**
 * Failing fast while the database is known to be unreachable.
 *
 * While no server can be selected, the driver holds every operation for up
 * to `serverSelectionTimeoutMS` (2 s) in case one comes back, so during an
 * outage each call waited that long: callers with a deadline of 2 s or less
 * got DEADLINE_EXCEEDED, never UNAVAILABLE (found by
 * test/faults/ferretdb.test.ts, FerretDB killed under load). The driver's
 * monitor knows better: when the last heartbeat of every server failed,
 * nothing can be reached, and `gate` fails a store call at once with
 * StoreUnavailable. The heartbeat that ends this comes from the driver (its
 * own interval, and a check whenever an operation waits for a server, which
 * the health ping does every 2 s: the ping is never gated), so calls go
 * through again once the store's health is SERVING again.
 *
 * A heartbeat that failed is a server that did not answer its monitor, not
 * one slow operation: a single connection reset does not close the gate.
 */
import { Effect } from "effect";
import type {
  MongoClient,
  ServerClosedEvent,
  ServerHeartbeatFailedEvent,
  ServerHeartbeatSucceededEvent,
} from "mongodb";
import { type Collection, StoreUnavailable } from "../store.js";

/** Starts following `client`'s heartbeats (attach before the first operation); `stop` detaches. */
export const trackAvailability = (client: MongoClient) => {
  /** Per server address: the failure of its last heartbeat, or undefined when it answered. */
  const servers = new Map<string, Error | undefined>();
  const onFailed = (e: ServerHeartbeatFailedEvent) => servers.set(e.connectionId, e.failure);
  const onSucceeded = (e: ServerHeartbeatSucceededEvent) => servers.set(e.connectionId, undefined);
  const onClosed = (e: ServerClosedEvent) => servers.delete(e.address);
  client.on("serverHeartbeatFailed", onFailed);
  client.on("serverHeartbeatSucceeded", onSucceeded);
  client.on("serverClosed", onClosed);

  /** Why nothing can be reached, when the last heartbeat of every known server failed. */
  const unreachable = (): Error | undefined => {
    let failure: Error | undefined;
    for (const last of servers.values()) {
      if (last === undefined) return undefined;
      failure = last;
    }
    return failure;
  };

  /** `effect`, or StoreUnavailable at once while no server answers its monitor. */
  const gate = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | StoreUnavailable> =>
    Effect.suspend((): Effect.Effect<A, E | StoreUnavailable> => {
      const failure = unreachable();
      return failure === undefined ? effect : Effect.fail(new StoreUnavailable({ cause: failure }));
    });

  return {
    gate,
    /** Every call of `c` gated. */
    gateCollection: (c: Collection): Collection => ({
      get: (id) => gate(c.get(id)),
      getMany: (ids) => gate(c.getMany(ids)),
      insert: (doc) => gate(c.insert(doc)),
      update: (id, set, condition) => gate(c.update(id, set, condition)),
      remove: (id, condition) => gate(c.remove(id, condition)),
      removeWhere: (where) => gate(c.removeWhere(where)),
      find: (query) => gate(c.find(query)),
    }),
    stop: () => {
      client.off("serverHeartbeatFailed", onFailed);
      client.off("serverHeartbeatSucceeded", onSucceeded);
      client.off("serverClosed", onClosed);
    },
  };
};
