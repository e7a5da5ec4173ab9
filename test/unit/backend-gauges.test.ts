/**
 * The numbers behind the backend gauges, without a backend: the MongoDB pool
 * counts from the driver's connection-pool events (replayed on an emitter
 * in the order the driver sends them), and the Hazelcast map sizes polled
 * on a stand-in cluster that answers at once, slowly, or not at all.
 */
import { EventEmitter } from "node:events";
import { describe, expect, it } from "@effect/vitest";
import { Duration, Effect, Fiber, TestClock } from "effect";
import type { IMap } from "hazelcast-client";
import type { MongoClient } from "mongodb";
import { trackPools } from "../../src/datastore/mongodb/pool.js";
import type { Cluster, OnMap } from "../../src/memory/hazelcast/client.js";
import { makeMapSizes } from "../../src/memory/hazelcast/map-sizes.js";
import { StoreUnavailable } from "../../src/memory/store.js";

describe("MongoDB pool counts", () => {
  const pool = () => {
    const client = new EventEmitter();
    const pools = trackPools(client as unknown as MongoClient);
    const emit = (event: string, address: string, connectionId?: number) =>
      client.emit(event, { address, connectionId });
    return { client, pools, emit };
  };

  it("counts established connections as idle or in use, over every server", () => {
    const { pools, emit } = pool();
    expect(pools.snapshot()).toEqual({ inUse: 0, idle: 0 });
    emit("connectionCreated", "a:27017", 1);
    // Created but not established yet: not part of the pool's size.
    expect(pools.snapshot()).toEqual({ inUse: 0, idle: 0 });
    emit("connectionReady", "a:27017", 1);
    emit("connectionReady", "a:27017", 2);
    emit("connectionReady", "b:27017", 1);
    expect(pools.snapshot()).toEqual({ inUse: 0, idle: 3 });
    emit("connectionCheckedOut", "a:27017", 1);
    emit("connectionCheckedOut", "b:27017", 1);
    expect(pools.snapshot()).toEqual({ inUse: 2, idle: 1 });
    emit("connectionCheckedIn", "a:27017", 1);
    expect(pools.snapshot()).toEqual({ inUse: 1, idle: 2 });
  });

  it("a connection closed while checked out leaves both counts; a closed pool leaves all", () => {
    const { pools, emit } = pool();
    for (const id of [1, 2, 3]) emit("connectionReady", "a:27017", id);
    emit("connectionCheckedOut", "a:27017", 1);
    emit("connectionCheckedOut", "a:27017", 2);
    // A network error: the driver checks the connection in, then closes it.
    emit("connectionCheckedIn", "a:27017", 2);
    emit("connectionClosed", "a:27017", 2);
    // A connection that failed while being established was never counted.
    emit("connectionCreated", "a:27017", 4);
    emit("connectionClosed", "a:27017", 4);
    expect(pools.snapshot()).toEqual({ inUse: 1, idle: 1 });
    emit("connectionPoolClosed", "a:27017");
    expect(pools.snapshot()).toEqual({ inUse: 0, idle: 0 });
    // The server's pool again (new ids from 1): counted afresh.
    emit("connectionReady", "a:27017", 1);
    expect(pools.snapshot()).toEqual({ inUse: 0, idle: 1 });
  });

  it("stop detaches every listener", () => {
    const { client, pools } = pool();
    expect(client.eventNames().length).toBeGreaterThan(0);
    pools.stop();
    expect(client.eventNames()).toEqual([]);
  });
});

describe("Hazelcast map sizes", () => {
  /** A cluster whose maps hold `sizes[map]` entries and answer after `delay` (or fail). */
  const standIn = (state: {
    sizes: Record<string, number>;
    delay: Duration.Duration;
    failing: boolean;
    calls: number;
  }): Cluster => {
    const on =
      (name: string): OnMap<never> =>
      (_what, op) =>
        Effect.gen(function* () {
          state.calls++;
          yield* Effect.sleep(state.delay);
          if (state.failing) return yield* new StoreUnavailable({ cause: new Error("down") });
          const map = { size: async () => state.sizes[name] ?? 0 };
          return yield* Effect.promise(() => op(map as unknown as IMap<string, never>));
        });
    return {
      onMeta: on("meta"),
      onData: on("data"),
      fire: () => {
        throw new Error("the map sizes wait for every call");
      },
      onBranches: on("branches"),
      onLocks: on("locks"),
      ping: Effect.void,
    };
  };
  const fresh = (delay = Duration.zero) => ({
    sizes: { meta: 3, data: 4, branches: 1, locks: 0 } as Record<string, number>,
    delay,
    failing: false,
    calls: 0,
  });
  const asRecord = (sizes: ReadonlyArray<{ map: string; entries: number }>) =>
    Object.fromEntries(sizes.map((s) => [s.map, s.entries]));
  const sizesOf = (state: ReturnType<typeof fresh>) => makeMapSizes(standIn(state));

  it.scoped("a collection gets the sizes polled for it", () =>
    Effect.gen(function* () {
      const state = fresh();
      const { current } = yield* sizesOf(state);
      expect(asRecord(yield* current)).toEqual({ meta: 3, data: 4, branches: 1, locks: 0 });
      expect(state.calls).toBe(4);
    }),
  );

  it.scoped("collections within a second share one poll; a later one polls again", () =>
    Effect.gen(function* () {
      const state = fresh();
      const { current } = yield* sizesOf(state);
      yield* current;
      state.sizes.meta = 10;
      yield* TestClock.adjust("500 millis");
      expect(asRecord(yield* current).meta).toBe(3);
      expect(state.calls).toBe(4);
      yield* TestClock.adjust("600 millis");
      expect(asRecord(yield* current).meta).toBe(10);
      expect(state.calls).toBe(8);
    }),
  );

  it.scoped("a slow cluster: a collection waits 250 ms at most, then has the last sizes", () =>
    Effect.gen(function* () {
      const state = fresh(Duration.seconds(2));
      const { current } = yield* sizesOf(state);
      /** One collection, with the clock moved past its 250 ms wait. */
      const collect = Effect.gen(function* () {
        const fiber = yield* Effect.fork(current);
        yield* TestClock.adjust("250 millis");
        return asRecord(yield* Fiber.join(fiber));
      });
      // Nothing polled yet: nothing to report after the wait (not after the 2 s poll).
      expect(yield* collect).toEqual({});
      // The poll still runs: no second one, still nothing.
      expect(yield* collect).toEqual({});
      expect(state.calls).toBe(4);
      // It finished in the background: its sizes are there.
      yield* TestClock.adjust("1500 millis");
      expect(yield* collect).toEqual({ meta: 3, data: 4, branches: 1, locks: 0 });
      // A new slow poll: the collections meanwhile report the previous sizes.
      state.sizes.meta = 10;
      yield* TestClock.adjust("1 second");
      expect((yield* collect).meta).toBe(3);
      expect((yield* collect).meta).toBe(3);
      expect(state.calls).toBe(8);
      yield* TestClock.adjust("2 seconds");
      expect((yield* collect).meta).toBe(10);
    }),
  );

  it.scoped("failed polls keep the last sizes for a minute, then report none", () =>
    Effect.gen(function* () {
      const state = fresh();
      const { current } = yield* sizesOf(state);
      yield* current;
      state.failing = true;
      yield* TestClock.adjust("30 seconds");
      expect(asRecord(yield* current).meta).toBe(3);
      yield* TestClock.adjust("31 seconds");
      expect(yield* current).toEqual([]);
      state.failing = false;
      yield* TestClock.adjust("2 seconds");
      expect(asRecord(yield* current).meta).toBe(3);
    }),
  );
});
