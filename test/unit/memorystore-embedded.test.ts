import { describe, expect, it } from "@effect/vitest";
import { Chunk, type Duration, Effect, Option, Queue, TestClock, TestContext } from "effect";
import { EmbeddedMemoryStore } from "../../src/memory/embedded.js";
import {
  type BranchRecord,
  type MemoryRecord,
  MemoryStore,
  type StoreEvent,
} from "../../src/memory/store.js";
import { memoryStoreConformance } from "../conformance/memorystore.suite.js";

memoryStoreConformance("embedded", () => EmbeddedMemoryStore.layer());

/** A record allocated at `allocateTime` (TestClock time) with the given lifetimes. */
const record = (
  address: string,
  fields: Partial<MemoryRecord> & { ttlMs: number; maxIdleMs: number },
): MemoryRecord => {
  const allocateTime = fields.allocateTime ?? 0;
  return {
    address,
    executionId: "EXEC-1",
    flowId: "FLOW-1",
    stepType: "PROCESS",
    branchPath: "main",
    stepId: "1",
    dataType: "Result",
    additionalInfo: "",
    owner: "owner",
    contentType: "application/octet-stream",
    sizeBytes: 0,
    sizeLimitBytes: 1024,
    version: 0,
    revision: 0,
    allocateTime,
    lastWriteTime: allocateTime,
    expireTime: allocateTime + fields.ttlMs,
    ...fields,
  };
};

/** Events published so far (lets forked fibers such as the sweeper run first). */
const drain = (queue: Queue.Dequeue<StoreEvent>) =>
  Effect.repeatN(Effect.yieldNow(), 10).pipe(
    Effect.zipRight(Queue.takeAll(queue)),
    Effect.map((events) => Chunk.toArray(events).map((e) => [e.type, e.address, e.time])),
  );

/**
 * Runs `f` on a fresh store built under a TestClock of its own. (The tests
 * below are `live`, with the TestContext provided here: the conformance
 * suite's `layer(...)` replaces `it.effect` and `it.scoped` of the whole
 * file by versions without test services.)
 */
const withStore = <A, E, R>(
  f: (store: typeof MemoryStore.Service) => Effect.Effect<A, E, R>,
  sweepInterval: Duration.DurationInput = "100 millis",
) =>
  Effect.flatMap(MemoryStore, f).pipe(
    Effect.provide(EmbeddedMemoryStore.layer({ sweepInterval })),
    Effect.provide(TestContext.TestContext),
  );

describe("embedded MemoryStore", () => {
  it.scopedLive("an expired entry is invisible at once, to the millisecond, before any sweep", () =>
    withStore(
      (store) =>
        Effect.gen(function* () {
          const events = yield* store.subscribe;
          const idle = record("idle", { ttlMs: 1_000, maxIdleMs: 400 });
          const touched = record("touched", { ttlMs: 1_000, maxIdleMs: 400 });
          yield* store.create(idle);
          yield* store.create(touched);
          const present = (address: string, touch = false) =>
            Effect.map(store.get(address, touch), Option.isSome);

          yield* TestClock.adjust(399);
          expect(yield* present("idle")).toBe(true); // untouched by the look
          expect(yield* present("touched", true)).toBe(true);
          yield* TestClock.adjust(1); // 400
          expect(yield* present("idle")).toBe(false);
          expect(yield* store.get("touched", false)).toEqual(
            Option.some({ record: touched, lastAccessTime: 399 }),
          );
          yield* TestClock.adjust(300); // 700
          expect(Option.isSome(yield* store.read("touched"))).toBe(true);
          yield* TestClock.adjust(299); // 999: idle since 700, TTL not reached
          expect(yield* present("touched", true)).toBe(true);
          yield* TestClock.adjust(1); // 1000: the TTL, however recently touched
          expect(yield* present("touched")).toBe(false);
          expect(yield* store.query({})).toEqual([]);

          // Reported when found, once each.
          expect(yield* drain(events)).toEqual([
            ["created", "idle", 0],
            ["created", "touched", 0],
            ["expired", "idle", 400],
            ["expired", "touched", 1_000],
          ]);
        }),
      "1 hour",
    ),
  );

  it.scopedLive("the sweeper removes and reports expiries nobody looks at, once", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const events = yield* store.subscribe;
        const byTtl = record("by-ttl", { ttlMs: 1_000, maxIdleMs: 1_000 });
        const byIdle = record("by-idle", { ttlMs: 5_000, maxIdleMs: 300 });
        yield* store.create(byTtl);
        yield* store.create(byIdle);
        yield* TestClock.adjust(250);
        expect(yield* drain(events)).toEqual([
          ["created", "by-ttl", 0],
          ["created", "by-idle", 0],
        ]);
        yield* TestClock.adjust(100);
        expect(yield* drain(events)).toEqual([["expired", "by-idle", 300]]);
        yield* TestClock.adjust(700);
        const last = yield* Queue.take(events);
        expect(last).toEqual({ type: "expired", address: "by-ttl", record: byTtl, time: 1_000 });
        expect(yield* store.get("by-ttl", false)).toEqual(Option.none());
        yield* TestClock.adjust(1_000);
        expect(yield* drain(events)).toEqual([]);
      }),
    ),
  );

  it.scopedLive("re-creating an expired address reports the expiry first", () =>
    withStore(
      (store) =>
        Effect.gen(function* () {
          const events = yield* store.subscribe;
          yield* store.create(record("x", { ttlMs: 100, maxIdleMs: 100 }));
          yield* TestClock.adjust(100);
          const again = record("x", { ttlMs: 100, maxIdleMs: 100, allocateTime: 100, owner: "b" });
          expect(yield* store.create(again)).toBe(true);
          expect(yield* drain(events)).toEqual([
            ["created", "x", 0],
            ["expired", "x", 100],
            ["created", "x", 100],
          ]);
        }),
      "1 hour",
    ),
  );

  it.live("update keeps the TTL of the record passed and restarts max idle", () =>
    withStore(
      (store) =>
        Effect.gen(function* () {
          const original = record("u", { ttlMs: 1_000, maxIdleMs: 300 });
          yield* store.create(original);
          yield* TestClock.adjust(250);
          const next = { ...original, revision: 1, version: 1 };
          expect(yield* store.update("u", 0, next, Uint8Array.of(1))).toBe(true);
          yield* TestClock.adjust(250); // 500: idle since 250
          expect(yield* store.get("u", false)).toEqual(
            Option.some({ record: next, lastAccessTime: 250 }),
          );
          // A record with a later expireTime moves the TTL (the domain never sends one).
          const longer = { ...next, revision: 2, expireTime: 2_000 };
          expect(yield* store.update("u", 1, longer)).toBe(true);
          yield* TestClock.adjust(700); // 1200: idle since 500
          expect(Option.isSome(yield* store.read("u"))).toBe(false);
        }),
      "1 hour",
    ),
  );

  it.live("an update must not change the address", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const r = record("a", { ttlMs: 1_000, maxIdleMs: 1_000 });
        yield* store.create(r);
        const exit = yield* Effect.exit(store.update("a", 0, { ...r, address: "b" }));
        expect(exit._tag).toBe("Failure");
      }),
    ),
  );

  it.live("locks expire exactly at the end of their lease; renewal extends it", () =>
    withStore((store) =>
      Effect.gen(function* () {
        expect(yield* store.tryLock("r", "alice", 1_000)).toEqual({
          acquired: true,
          expireTime: 1_000,
        });
        yield* TestClock.adjust(400);
        expect(yield* store.tryLock("r", "alice", 1_000)).toEqual({
          acquired: true,
          expireTime: 1_400,
        });
        yield* TestClock.adjust(999); // 1399
        expect(yield* store.tryLock("r", "bob", 1_000)).toEqual({
          acquired: false,
          expireTime: 1_400,
        });
        yield* TestClock.adjust(1); // 1400
        expect(yield* store.unlock("r", "alice")).toBe("missing");
        expect(yield* store.tryLock("r", "bob", 1_000)).toEqual({
          acquired: true,
          expireTime: 2_400,
        });
        expect(yield* store.unlock("r", "alice")).toBe("others");
      }),
    ),
  );

  it.live("branches are listed in branch path order", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const branch = (branchPath: string): BranchRecord => ({
          executionId: "E",
          branchPath,
          parentPath: "",
          status: "NEW",
          retainForMerge: false,
          revision: 1,
          createTime: 0,
          updateTime: 0,
        });
        for (const p of ["main.b", "main.a.b", "main", "main.a", "main.B"]) {
          yield* store.branches.create(branch(p));
        }
        const list = yield* store.branches.list("E");
        expect(list.map((b) => b.branchPath)).toEqual([
          "main",
          "main.B",
          "main.a",
          "main.a.b",
          "main.b",
        ]);
      }),
    ),
  );

  it.live("records handed in and out do not alias the stored ones", () =>
    withStore((store) =>
      Effect.gen(function* () {
        const r = { ...record("a", { ttlMs: 1_000, maxIdleMs: 1_000 }) };
        yield* store.create(r);
        (r as { owner: string }).owner = "changed";
        const stored = Option.getOrThrow(yield* store.get("a", false)).record;
        expect(stored.owner).toBe("owner");
        expect(() => {
          (stored as { owner: string }).owner = "changed";
        }).toThrow(TypeError);
      }),
    ),
  );

  it.scopedLive("a subscriber that never reads keeps only the newest events", () =>
    withStore(
      (store) =>
        Effect.gen(function* () {
          const events = yield* store.subscribe;
          const n = 20_000;
          for (let i = 0; i < n; i++) {
            yield* store.create(record(`a${i}`, { ttlMs: 1_000, maxIdleMs: 1_000 }));
          }
          const kept = Chunk.toArray(yield* Queue.takeAll(events));
          expect(kept.length).toBeLessThan(n);
          expect(kept.at(-1)?.address).toBe(`a${n - 1}`);
        }),
      "1 hour",
    ),
  );

  it.live("once released, the store is unavailable and subscriptions end", () =>
    Effect.gen(function* () {
      const { store, events } = yield* withStore((s) =>
        Effect.map(s.subscribe, (events) => ({ store: s, events })),
      ).pipe(Effect.scoped);
      const record_ = record("a", { ttlMs: 1_000, maxIdleMs: 1_000 });
      for (const failed of [
        store.ping,
        store.create(record_),
        store.get("a", true),
        store.query({}),
        store.tryLock("r", "h", 1_000),
        Effect.scoped(store.subscribe),
      ]) {
        const error = yield* Effect.flip(failed);
        expect(error._tag).toBe("StoreUnavailable");
      }
      expect(yield* Queue.isShutdown(events)).toBe(true);
    }),
  );
});
