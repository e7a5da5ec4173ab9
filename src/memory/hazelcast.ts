/**
 * MemoryStore on a Hazelcast 5.x cluster (Community edition) through the
 * official Node client. Four maps, named `${mapPrefix}meta|data|branches|locks`;
 * the parts, each with what Hazelcast 5.6 does that it relies on (measured
 * against the member, see the tests), are in `./hazelcast/`:
 *
 * - `client.ts`: the client, bounded calls, errors → StoreUnavailable (availability).
 * - `entries.ts`: records in `meta`, their bytes in `data`, TTL and max idle
 *   on the member; `key-lock.ts`: the compare-and-set under the key's lock;
 *   `filter.ts`: queries as member-side predicates.
 * - `events.ts`: the entry listener → subscribers; `expiry.ts`: the watch
 *   that makes the member expire due entries without minute-long delays.
 * - `branches.ts`, `locks.ts`: branch records and leased locks.
 * - `stored.ts`: the stored values, and durations in the member's terms.
 * - `map-sizes.ts`: entries per map, polled for the `memory.map.entries` gauge.
 *
 * Both JSON maps get a hash index on `executionId` at start (a cluster
 * restarted empty lacks it until the next start of a mesh instance).
 */
import { Context, Effect, Layer } from "effect";
import type { IndexConfig } from "hazelcast-client";
import { makeBranchStore } from "./hazelcast/branches.js";
import {
  connect,
  type HazelcastMemoryStoreConfigError,
  type HazelcastMemoryStoreOptions,
} from "./hazelcast/client.js";
import { makeEntryStore } from "./hazelcast/entries.js";
import { makeEvents } from "./hazelcast/events.js";
import { makeExpiryWatch } from "./hazelcast/expiry.js";
import { makeLockStore } from "./hazelcast/locks.js";
import { MemoryMapSizes, makeMapSizes } from "./hazelcast/map-sizes.js";
import { MemoryStore, type MemoryStoreShape } from "./store.js";

export {
  HazelcastMemoryStoreConfigError,
  type HazelcastMemoryStoreOptions,
} from "./hazelcast/client.js";

/** Both JSON maps are queried by execution most of the time. */
const EXECUTION_INDEX: IndexConfig = { type: "HASH", attributes: ["executionId"] };

const make = (options: HazelcastMemoryStoreOptions) =>
  Effect.gen(function* () {
    const cluster = yield* connect(options);
    const expiry = yield* makeExpiryWatch(cluster);
    const events = yield* makeEvents(cluster, expiry);

    // In the background: the cluster may be down at start.
    yield* events.register.pipe(
      // Lookups by execution (listings, clean-ups, merges) from an index rather than a scan.
      Effect.zipRight(
        Effect.all(
          [
            cluster.onMeta("addIndex", (m) => m.addIndex(EXECUTION_INDEX)),
            cluster.onBranches("addIndex", (m) => m.addIndex(EXECUTION_INDEX)),
          ],
          { discard: true },
        ).pipe(
          Effect.catchAllCause((cause) =>
            Effect.logWarning("memory store (hazelcast): adding indexes failed", cause),
          ),
        ),
      ),
      Effect.zipRight(expiry.run),
      Effect.forkScoped,
    );

    const store: MemoryStoreShape = {
      backend: "hazelcast",
      ping: cluster.ping,
      ...makeEntryStore(cluster),
      subscribe: events.subscribe,
      branches: makeBranchStore(cluster),
      ...makeLockStore(cluster),
    };
    return Context.make(MemoryStore, store).pipe(
      Context.add(MemoryMapSizes, yield* makeMapSizes(cluster)),
    );
  });

export const HazelcastMemoryStore = {
  /**
   * The store, and the sizes of its maps; builds without waiting for the
   * cluster (so also while it is down). The client shuts down on release.
   */
  layer: (
    options: HazelcastMemoryStoreOptions,
  ): Layer.Layer<MemoryStore | MemoryMapSizes, HazelcastMemoryStoreConfigError> =>
    Layer.scopedContext(make(options)),
};
