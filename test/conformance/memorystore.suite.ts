/**
 * The MemoryStore contract, run unchanged against every backend (embedded,
 * Hazelcast). Real time throughout: expiry is the backend's own, so the
 * tests use TTLs and max idle times of 1-2 s and poll (every 100 ms, each
 * wait bounded) for what must happen, allowing for Hazelcast's expiry
 * granularity of about a second. Each test works on addresses, executions,
 * flows, owners and lock resources of its own (random suffixes), so several
 * runs can share one cluster.
 */
import { expect, layer } from "@effect/vitest";
import { Clock, Effect, type Layer, Option, Queue, Schedule } from "effect";
import {
  type BranchRecord,
  type MemoryRecord,
  MemoryStore,
  type StoredEntry,
  type StoreEvent,
} from "../../src/memory/store.js";

const unique = (label: string): string => `${label}-${Math.random().toString(36).slice(2, 12)}`;

/** How long past its due time an expiry may take to be observed (Hazelcast: ~1 s granularity). */
const EXPIRY_SLACK_MS = 3_000;
/**
 * How long an `expired` event may take for an entry nobody touches: a
 * backend that finds expired entries by a periodic background scan (Hazelcast
 * every few seconds) reports them only then.
 */
const EXPIRED_EVENT_WITHIN_MS = 10_000;
/** For the tests that wait on real time. */
const SLOW_TEST_MS = 30_000;

/** A record of a fresh execution unless `fields` say otherwise; the address follows its parts. */
const makeRecord = (now: number, fields: Partial<MemoryRecord> = {}): MemoryRecord => {
  const base = {
    executionId: unique("EXEC"),
    flowId: unique("FLOW"),
    stepType: "PROCESS",
    branchPath: "main",
    stepId: "1",
    dataType: "Result",
    additionalInfo: "",
    owner: unique("owner"),
    contentType: "application/octet-stream",
    sizeBytes: 0,
    sizeLimitBytes: 1024,
    version: 0,
    revision: 0,
    allocateTime: now,
    lastWriteTime: now,
    ttlMs: 60_000,
    maxIdleMs: 30_000,
    ...fields,
  };
  const parts = [
    base.executionId,
    base.flowId,
    base.stepType,
    base.branchPath,
    base.stepId,
    base.dataType,
  ];
  if (base.additionalInfo !== "") parts.push(base.additionalInfo);
  return {
    address: parts.join(":"),
    expireTime: base.allocateTime + base.ttlMs,
    ...base,
  };
};

/** A new record created in the store. */
const created = (fields: Partial<MemoryRecord> = {}) =>
  Effect.gen(function* () {
    const store = yield* MemoryStore;
    const record = makeRecord(yield* Clock.currentTimeMillis, fields);
    expect(yield* store.create(record)).toBe(true);
    return record;
  });

/** The record after a write: what the domain passes to `update`. */
const written = (record: MemoryRecord, now: number, data: Uint8Array): MemoryRecord => ({
  ...record,
  version: record.version + 1,
  revision: record.revision + 1,
  sizeBytes: data.length,
  lastWriteTime: now,
});

const bytes = (...values: number[]) => Uint8Array.from(values);

const sorted = (...records: MemoryRecord[]): MemoryRecord[] =>
  records.sort((a, b) => (a.address < b.address ? -1 : 1));

const byAddress = (entries: ReadonlyArray<StoredEntry>): MemoryRecord[] =>
  sorted(...entries.map((e) => e.record));

/** Repeats `check` every 100 ms until it is true; fails after `withinMs`. */
const eventually = <E, R>(label: string, withinMs: number, check: Effect.Effect<boolean, E, R>) =>
  check.pipe(
    Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (done) => done }),
    Effect.timeoutFail({
      duration: withinMs,
      onTimeout: () => new Error(`${label}: not within ${withinMs} ms`),
    }),
  );

/** The next event about `address` (others' events are skipped); fails after `withinMs`. */
const nextEvent = (queue: Queue.Dequeue<StoreEvent>, address: string, withinMs: number) =>
  Queue.take(queue).pipe(
    Effect.repeat({ until: (event) => event.address === address }),
    Effect.timeoutFail({
      duration: withinMs,
      onTimeout: () => new Error(`no event about ${address} within ${withinMs} ms`),
    }),
  );

/** Whether the entry is gone for every non-touching way of looking. */
const goneUntouched = (record: MemoryRecord) =>
  Effect.gen(function* () {
    const store = yield* MemoryStore;
    const got = yield* store.get(record.address, false);
    const listed = yield* store.query({ executionId: record.executionId });
    return Option.isNone(got) && listed.length === 0;
  });

const branch = (
  executionId: string,
  branchPath: string,
  fields: Partial<BranchRecord> = {},
): BranchRecord => ({
  executionId,
  branchPath,
  parentPath: branchPath.includes(".") ? branchPath.slice(0, branchPath.lastIndexOf(".")) : "",
  status: "NEW",
  retainForMerge: false,
  revision: 1,
  createTime: 1_000,
  updateTime: 1_000,
  ...fields,
});

export const memoryStoreConformance = (
  name: string,
  makeLayer: () => Layer.Layer<MemoryStore, unknown>,
) =>
  layer(makeLayer(), { excludeTestServices: true, timeout: "60 seconds" })(
    `MemoryStore conformance: ${name}`,
    (it) => {
      it.effect("ping succeeds and the backend names itself", () =>
        Effect.gen(function* () {
          const store = yield* MemoryStore;
          yield* store.ping;
          expect(["hazelcast", "embedded"]).toContain(store.backend);
        }),
      );

      it.effect("create, then a duplicate create changes nothing", () =>
        Effect.gen(function* () {
          const store = yield* MemoryStore;
          const record = yield* created();
          const again = { ...record, owner: "someone-else", revision: 7 };
          expect(yield* store.create(again)).toBe(false);
          const got = yield* store.get(record.address, false);
          expect(Option.map(got, (e) => e.record)).toEqual(Option.some(record));
          expect(yield* store.get(unique("missing"), true)).toEqual(Option.none());
        }),
      );

      it.effect("get with and without touch; read returns the record and empty data", () =>
        Effect.gen(function* () {
          const store = yield* MemoryStore;
          const record = yield* created();
          const untouched = yield* store.get(record.address, false);
          const touched = yield* store.get(record.address, true);
          for (const got of [untouched, touched]) {
            expect(Option.map(got, (e) => e.record)).toEqual(Option.some(record));
          }
          const before = Option.getOrThrow(untouched).lastAccessTime;
          expect(before).toBeGreaterThan(0);
          expect(Option.getOrThrow(touched).lastAccessTime).toBeGreaterThanOrEqual(before);
          const read = Option.getOrThrow(yield* store.read(record.address));
          expect(read.entry.record).toEqual(record);
          expect(read.data).toEqual(new Uint8Array(0));
          expect(yield* store.read(unique("missing"))).toEqual(Option.none());
        }),
      );

      it.effect(
        "update is a compare-and-set on revision; data replaced when given, else kept",
        () =>
          Effect.gen(function* () {
            const store = yield* MemoryStore;
            const record = yield* created();
            const now = yield* Clock.currentTimeMillis;
            const first = written(record, now, bytes(1, 2, 3));
            expect(yield* store.update(record.address, 5, first, bytes(1, 2, 3))).toBe(false);
            expect(Option.getOrThrow(yield* store.read(record.address)).entry.record).toEqual(
              record,
            );

            expect(yield* store.update(record.address, 0, first, bytes(1, 2, 3))).toBe(true);
            let read = Option.getOrThrow(yield* store.read(record.address));
            expect(read.entry.record).toEqual(first);
            expect(read.data).toEqual(bytes(1, 2, 3));
            // Stale: the revision moved on.
            expect(yield* store.update(record.address, 0, first, bytes(9))).toBe(false);

            // An ownership change: the record only, the data stays.
            const transferred = { ...first, owner: unique("owner"), revision: 2 };
            expect(yield* store.update(record.address, 1, transferred)).toBe(true);
            read = Option.getOrThrow(yield* store.read(record.address));
            expect(read.entry.record).toEqual(transferred);
            expect(read.data).toEqual(bytes(1, 2, 3));

            const missing = makeRecord(now);
            expect(yield* store.update(missing.address, 0, missing, bytes(1))).toBe(false);
            expect(yield* store.get(missing.address, false)).toEqual(Option.none());
          }),
      );

      it.effect("data handed in and out is a copy", () =>
        Effect.gen(function* () {
          const store = yield* MemoryStore;
          const record = yield* created();
          const data = bytes(1, 2, 3);
          const next = written(record, yield* Clock.currentTimeMillis, data);
          expect(yield* store.update(record.address, 0, next, data)).toBe(true);
          data[0] = 99;
          const first = Option.getOrThrow(yield* store.read(record.address)).data;
          expect(first).toEqual(bytes(1, 2, 3));
          first[1] = 99;
          expect(Option.getOrThrow(yield* store.read(record.address)).data).toEqual(bytes(1, 2, 3));
        }),
      );

      it.effect("of 20 concurrent updates with the same expected revision exactly one wins", () =>
        Effect.gen(function* () {
          const store = yield* MemoryStore;
          const record = yield* created();
          const now = yield* Clock.currentTimeMillis;
          const attempts = Array.from({ length: 20 }, (_, i) => ({
            record: { ...written(record, now, bytes(i)), owner: `writer-${i}` },
            data: bytes(i),
          }));
          const results = yield* Effect.all(
            attempts.map((a) => store.update(record.address, 0, a.record, a.data)),
            { concurrency: "unbounded" },
          );
          expect(results.filter((won) => won)).toHaveLength(1);
          const winner = attempts[results.indexOf(true)];
          const read = Option.getOrThrow(yield* store.read(record.address));
          expect(read.entry.record).toEqual(winner?.record);
          expect(read.data).toEqual(winner?.data);
        }),
      );

      it.effect(
        "modify: the change sees the live entry; its record and data replace it, data kept when not given",
        () =>
          Effect.gen(function* () {
            const store = yield* MemoryStore;
            const record = yield* created();
            const now = yield* Clock.currentTimeMillis;
            const first = written(record, now, bytes(1, 2));
            const seen: MemoryRecord[] = [];
            const modified = yield* store.modify(record.address, (current) => {
              seen.push(current.record);
              return Effect.succeed({ record: first, data: bytes(1, 2) });
            });
            expect(seen).toEqual([record]);
            expect(Option.map(modified, (e) => e.record)).toEqual(Option.some(first));
            expect(Option.getOrThrow(modified).lastAccessTime).toBeGreaterThanOrEqual(now);
            let read = Option.getOrThrow(yield* store.read(record.address));
            expect(read.entry.record).toEqual(first);
            expect(read.data).toEqual(bytes(1, 2));

            const transferred = { ...first, owner: unique("owner"), revision: first.revision + 1 };
            yield* store.modify(record.address, () => Effect.succeed({ record: transferred }));
            read = Option.getOrThrow(yield* store.read(record.address));
            expect(read.entry.record).toEqual(transferred);
            expect(read.data).toEqual(bytes(1, 2));

            // A failing change leaves the entry as it was.
            const refused = yield* Effect.flip(
              store.modify(record.address, () => Effect.fail("refused" as const)),
            );
            expect(refused).toBe("refused");
            read = Option.getOrThrow(yield* store.read(record.address));
            expect(read.entry.record).toEqual(transferred);
            expect(read.data).toEqual(bytes(1, 2));

            // Not there: no change is asked for.
            let asked = false;
            const missing = yield* store.modify(unique("missing"), () => {
              asked = true;
              return Effect.succeed({ record: first });
            });
            expect(missing).toEqual(Option.none());
            expect(asked).toBe(false);
          }),
      );

      it.effect("modify: 20 concurrent changes of one entry all apply, one after the other", () =>
        Effect.gen(function* () {
          const store = yield* MemoryStore;
          const record = yield* created();
          const results = yield* Effect.all(
            Array.from({ length: 20 }, (_, i) =>
              store.modify(record.address, (current) =>
                Effect.succeed({
                  record: {
                    ...current.record,
                    version: current.record.version + 1,
                    revision: current.record.revision + 1,
                    sizeBytes: current.record.sizeBytes + 1,
                  },
                  data: bytes(i),
                }),
              ),
            ),
            { concurrency: "unbounded" },
          );
          // Each saw the one before it: no change was lost or made twice.
          const versions = results.map((r) => Option.getOrThrow(r).record.version);
          expect([...versions].sort((x, y) => x - y)).toEqual(
            Array.from({ length: 20 }, (_, i) => i + 1),
          );
          const read = Option.getOrThrow(yield* store.read(record.address));
          expect(read.entry.record).toMatchObject({ version: 20, revision: 20, sizeBytes: 20 });
          const last = versions.indexOf(20);
          expect(read.data).toEqual(bytes(last));
        }),
      );

      it.effect("readMany answers every address in order: found, missing, repeated", () =>
        Effect.gen(function* () {
          const store = yield* MemoryStore;
          const one = yield* created();
          const two = yield* created();
          const next = written(two, yield* Clock.currentTimeMillis, bytes(4, 5));
          expect(yield* store.update(two.address, 0, next, bytes(4, 5))).toBe(true);
          const missing = unique("missing");
          const got = yield* store.readMany([two.address, missing, one.address, two.address]);
          expect(got.map((r) => Option.map(r, (f) => f.entry.record))).toEqual([
            Option.some(next),
            Option.none(),
            Option.some(one),
            Option.some(next),
          ]);
          expect(got.map((r) => Option.map(r, (f) => f.data))).toEqual([
            Option.some(bytes(4, 5)),
            Option.none(),
            Option.some(new Uint8Array(0)),
            Option.some(bytes(4, 5)),
          ]);
          // Each answer is a copy of its own.
          Option.getOrThrow(got[0] ?? Option.none()).data[0] = 99;
          expect(Option.getOrThrow(got[3] ?? Option.none()).data).toEqual(bytes(4, 5));
          expect(Option.getOrThrow(yield* store.read(two.address)).data).toEqual(bytes(4, 5));
          expect(yield* store.readMany([])).toEqual([]);
        }),
      );

      it.effect("remove deletes the entry and its data; the address can be created again", () =>
        Effect.gen(function* () {
          const store = yield* MemoryStore;
          const record = yield* created();
          const next = written(record, yield* Clock.currentTimeMillis, bytes(7));
          expect(yield* store.update(record.address, 0, next, bytes(7))).toBe(true);
          expect(yield* store.remove(record.address)).toBe(true);
          expect(yield* store.get(record.address, true)).toEqual(Option.none());
          expect(yield* store.read(record.address)).toEqual(Option.none());
          expect(yield* store.query({ executionId: record.executionId })).toEqual([]);
          expect(yield* store.remove(record.address)).toBe(false);
          expect(yield* store.update(record.address, 1, next)).toBe(false);
          expect(yield* store.create(record)).toBe(true);
          const read = Option.getOrThrow(yield* store.read(record.address));
          expect(read.entry.record).toEqual(record);
          expect(read.data).toEqual(new Uint8Array(0));
        }),
      );

      it.effect("query matches every given filter field; branchPrefix takes sub-branches", () =>
        Effect.gen(function* () {
          const store = yield* MemoryStore;
          const [e1, e2, f1, f2, alice, bob] = [
            unique("EXEC"),
            unique("EXEC"),
            unique("FLOW"),
            unique("FLOW"),
            unique("alice"),
            unique("bob"),
          ];
          const at = (executionId: string, flowId: string, branchPath: string, more = {}) =>
            created({ executionId, flowId, branchPath, owner: alice, ...more });
          const main = yield* at(e1, f1, "main");
          const a = yield* at(e1, f1, "main.a", { stepType: "IMPORT", owner: bob });
          const ab = yield* at(e1, f1, "main.a.b");
          const aLonger = yield* at(e1, f1, "main.ab", { stepType: "EXPORT" });
          // `_` is a plain character, not a wildcard.
          const underscore = yield* at(e1, f1, "main.a_b.c");
          const lookalike = yield* at(e1, f1, "main.axb");
          const a2 = yield* at(e1, f1, "main.a", { stepId: "2", additionalInfo: "More" });
          const other = yield* at(e2, f2, "main.a", { owner: bob });
          const q = (filter: Parameters<typeof store.query>[0]) =>
            store.query(filter).pipe(Effect.map(byAddress));

          const inE1 = sorted(main, a, ab, aLonger, underscore, lookalike, a2);
          expect(yield* q({ executionId: e1 })).toEqual(inE1);
          expect(yield* q({ flowId: f1 })).toEqual(inE1);
          expect(yield* q({ flowId: f2 })).toEqual([other]);
          expect(yield* q({ owner: bob })).toEqual(sorted(a, other));
          expect(yield* q({ executionId: e1, owner: bob })).toEqual([a]);
          expect(yield* q({ executionId: e1, stepType: "EXPORT" })).toEqual([aLonger]);
          expect(yield* q({ executionId: e1, stepType: "PROCESS" })).toEqual(
            sorted(main, ab, underscore, lookalike, a2),
          );
          expect(yield* q({ executionId: e1, branchPrefix: "main.a" })).toEqual(sorted(a, ab, a2));
          expect(yield* q({ executionId: e1, branchPrefix: "main.a.b" })).toEqual([ab]);
          expect(yield* q({ executionId: e1, branchPrefix: "main.a_b" })).toEqual([underscore]);
          expect(yield* q({ executionId: e1, branchPrefix: "main" })).toEqual(inE1);
          expect(yield* q({ executionId: e1, branchPrefix: "mai" })).toEqual([]);
          expect(yield* q({ branchPrefix: "main.a", owner: bob })).toEqual(sorted(a, other));
          expect(
            yield* q({
              executionId: e1,
              flowId: f1,
              branchPrefix: "main.a",
              owner: alice,
              stepType: "PROCESS",
            }),
          ).toEqual(sorted(ab, a2));
          expect(yield* q({ executionId: e1, flowId: f2 })).toEqual([]);
          expect(yield* q({ executionId: unique("EXEC") })).toEqual([]);
          // No filter: everything, ours included (the backend may hold others' entries).
          const all = (yield* store.query({})).map((e) => e.record.address);
          for (const r of [...inE1, other]) expect(all).toContain(r.address);
        }),
      );

      it.effect(
        "TTL: an entry is gone after its TTL however often it is read, touched or updated",
        () =>
          Effect.gen(function* () {
            const store = yield* MemoryStore;
            const record = yield* created({ ttlMs: 2_000, maxIdleMs: 2_000 });
            let current = record;
            let accesses = 0;
            // Every access restarts max idle; none may extend the TTL.
            const accessedAndGone = Effect.gen(function* () {
              accesses++;
              if (accesses % 6 === 0) {
                const next = written(current, yield* Clock.currentTimeMillis, bytes(accesses));
                if (yield* store.update(record.address, current.revision, next, bytes(accesses))) {
                  current = next;
                }
              } else if (accesses % 3 === 0) {
                const at = yield* Clock.currentTimeMillis;
                const modified = yield* store.modify(record.address, (entry) =>
                  Effect.succeed({
                    record: written(entry.record, at, bytes(accesses)),
                    data: bytes(accesses),
                  }),
                );
                if (Option.isSome(modified)) current = modified.value.record;
              }
              const got =
                accesses % 3 === 1
                  ? yield* store.get(record.address, true)
                  : Option.map(yield* store.read(record.address), (r) => r.entry);
              return Option.isNone(got);
            });
            yield* eventually("TTL expiry", 2_000 + EXPIRY_SLACK_MS, accessedAndGone);
            expect(current.revision).toBeGreaterThan(0); // updates did happen
            expect(yield* store.read(record.address)).toEqual(Option.none());
            expect(yield* goneUntouched(record)).toBe(true);
            expect(yield* store.update(record.address, current.revision, current)).toBe(false);
          }),
        SLOW_TEST_MS,
      );

      it.effect(
        "max idle: touching keeps an entry beyond its max idle; untouched, it is gone after it",
        () =>
          Effect.gen(function* () {
            const store = yield* MemoryStore;
            const maxIdleMs = 2_000;
            const record = yield* created({ ttlMs: 60_000, maxIdleMs });
            const start = yield* Clock.currentTimeMillis;
            // Touched every 200 ms, by get, read and readMany in turn, well past its max idle.
            for (let i = 0; (yield* Clock.currentTimeMillis) - start < maxIdleMs + 1_500; i++) {
              const found =
                i % 3 === 0
                  ? Option.isSome(yield* store.get(record.address, true))
                  : i % 3 === 1
                    ? Option.isSome(yield* store.read(record.address))
                    : (yield* store.readMany([record.address])).every(Option.isSome);
              expect(found, `touched entry gone after ${i} accesses`).toBe(true);
              yield* Effect.sleep("200 millis");
            }
            // Now looked at without touching only: it must go.
            yield* eventually(
              "max idle expiry",
              maxIdleMs + EXPIRY_SLACK_MS,
              goneUntouched(record),
            );
            expect(yield* store.read(record.address)).toEqual(Option.none());
          }),
        SLOW_TEST_MS,
      );

      it.effect(
        "max idle: an entry never accessed after creation is gone after its max idle",
        () =>
          Effect.gen(function* () {
            const record = yield* created({ ttlMs: 60_000, maxIdleMs: 1_000 });
            yield* eventually("max idle expiry", 1_000 + EXPIRY_SLACK_MS, goneUntouched(record));
          }),
        SLOW_TEST_MS,
      );

      it.scoped(
        "subscribe: created, updated and removed events carry the record",
        () =>
          Effect.gen(function* () {
            const store = yield* MemoryStore;
            const events = yield* store.subscribe;
            const start = yield* Clock.currentTimeMillis;
            const record = yield* created();
            const next = written(record, yield* Clock.currentTimeMillis, bytes(1));
            expect(yield* store.update(record.address, 0, next, bytes(1))).toBe(true);
            expect(yield* store.remove(record.address)).toBe(true);

            const c = yield* nextEvent(events, record.address, 5_000);
            expect(c).toMatchObject({ type: "created", address: record.address, record });
            const u = yield* nextEvent(events, record.address, 5_000);
            expect(u).toMatchObject({ type: "updated", address: record.address, record: next });
            const r = yield* nextEvent(events, record.address, 5_000);
            expect(r.type).toBe("removed");
            if (r.record !== undefined) expect(r.record).toEqual(next);
            for (const e of [c, u, r]) expect(e.time).toBeGreaterThanOrEqual(start - 1_000);
          }),
        SLOW_TEST_MS,
      );

      it.scoped(
        "subscribe: an expired event arrives without anyone touching the entry",
        () =>
          Effect.gen(function* () {
            const store = yield* MemoryStore;
            const events = yield* store.subscribe;
            const record = yield* created({ ttlMs: 1_000, maxIdleMs: 1_000 });
            expect((yield* nextEvent(events, record.address, 5_000)).type).toBe("created");
            const expired = yield* nextEvent(
              events,
              record.address,
              1_000 + EXPIRED_EVENT_WITHIN_MS,
            );
            expect(expired.type).toBe("expired");
            if (expired.record !== undefined) expect(expired.record).toEqual(record);
            expect(yield* goneUntouched(record)).toBe(true);
          }),
        SLOW_TEST_MS,
      );

      it.effect("branches: create, duplicate, get, compare-and-set update", () =>
        Effect.gen(function* () {
          const { branches } = yield* MemoryStore;
          const exec = unique("EXEC");
          const main = branch(exec, "main");
          expect(yield* branches.create(main)).toBe(true);
          expect(yield* branches.create({ ...main, status: "FAILED" })).toBe(false);
          expect(yield* branches.get(exec, "main")).toEqual(Option.some(main));
          expect(yield* branches.get(exec, "main.a")).toEqual(Option.none());
          expect(yield* branches.get(unique("EXEC"), "main")).toEqual(Option.none());

          const started = { ...main, status: "IN_PROGRESS", revision: 2, updateTime: 2_000 };
          expect(yield* branches.update(2, started)).toBe(false);
          expect(yield* branches.update(1, started)).toBe(true);
          expect(yield* branches.get(exec, "main")).toEqual(Option.some(started));
          expect(yield* branches.update(1, { ...started, status: "FAILED" })).toBe(false);
          const missing = branch(exec, "main.z", { revision: 2 });
          expect(yield* branches.update(1, missing)).toBe(false);
          expect(yield* branches.get(exec, "main.z")).toEqual(Option.none());
        }),
      );

      it.effect("branches: of 20 concurrent updates with the same revision exactly one wins", () =>
        Effect.gen(function* () {
          const { branches } = yield* MemoryStore;
          const exec = unique("EXEC");
          expect(yield* branches.create(branch(exec, "main"))).toBe(true);
          const attempts = Array.from({ length: 20 }, (_, i) =>
            branch(exec, "main", { revision: 2, updateTime: 2_000 + i, status: "IN_PROGRESS" }),
          );
          const results = yield* Effect.all(
            attempts.map((b) => branches.update(1, b)),
            { concurrency: "unbounded" },
          );
          expect(results.filter((won) => won)).toHaveLength(1);
          expect(yield* branches.get(exec, "main")).toEqual(
            Option.some(attempts[results.indexOf(true)]),
          );
        }),
      );

      it.effect("branches: list by execution, removeExecution counts", () =>
        Effect.gen(function* () {
          const { branches } = yield* MemoryStore;
          const exec = unique("EXEC");
          const other = unique("EXEC");
          const records = ["main.b", "main", "main.a.x", "main.a"].map((p) => branch(exec, p));
          for (const b of records) expect(yield* branches.create(b)).toBe(true);
          expect(yield* branches.create(branch(other, "main"))).toBe(true);
          const byPath = (list: ReadonlyArray<BranchRecord>) =>
            [...list].sort((x, y) => (x.branchPath < y.branchPath ? -1 : 1));
          expect(byPath(yield* branches.list(exec))).toEqual(byPath(records));
          expect(yield* branches.list(unique("EXEC"))).toEqual([]);
          expect(yield* branches.removeExecution(exec)).toBe(4);
          expect(yield* branches.list(exec)).toEqual([]);
          expect(yield* branches.get(exec, "main")).toEqual(Option.none());
          expect(yield* branches.removeExecution(exec)).toBe(0);
          expect(yield* branches.list(other)).toEqual([branch(other, "main")]);
          expect(yield* branches.removeExecution(other)).toBe(1);
        }),
      );

      it.effect("locks: acquire, contention, renewal by the holder, unlock results", () =>
        Effect.gen(function* () {
          const store = yield* MemoryStore;
          const resource = unique("lock");
          const [alice, bob] = [unique("alice"), unique("bob")];
          const before = yield* Clock.currentTimeMillis;
          const first = yield* store.tryLock(resource, alice, 10_000);
          const after = yield* Clock.currentTimeMillis;
          expect(first.acquired).toBe(true);
          expect(first.expireTime).toBeGreaterThanOrEqual(before + 10_000 - 1_000);
          expect(first.expireTime).toBeLessThanOrEqual(after + 10_000 + 1_000);

          expect((yield* store.tryLock(resource, bob, 10_000)).acquired).toBe(false);
          const renewed = yield* store.tryLock(resource, alice, 20_000);
          expect(renewed.acquired).toBe(true);
          expect(renewed.expireTime).toBeGreaterThan(first.expireTime);
          expect((yield* store.tryLock(resource, bob, 10_000)).acquired).toBe(false);

          expect(yield* store.unlock(resource, bob)).toBe("others");
          expect(yield* store.unlock(resource, alice)).toBe("unlocked");
          expect(yield* store.unlock(resource, alice)).toBe("missing");
          expect(yield* store.unlock(unique("never-locked"), alice)).toBe("missing");
          expect((yield* store.tryLock(resource, bob, 10_000)).acquired).toBe(true);
          expect(yield* store.unlock(resource, alice)).toBe("others");
          expect(yield* store.unlock(resource, bob)).toBe("unlocked");
        }),
      );

      it.effect(
        "locks: an expired lease frees the lock; a renewed one holds on",
        () =>
          Effect.gen(function* () {
            const store = yield* MemoryStore;
            const [alice, bob, probe] = [unique("alice"), unique("bob"), unique("probe")];
            const [expiring, abandoned, renewed] = [unique("lock"), unique("lock"), unique("lock")];
            expect((yield* store.tryLock(abandoned, alice, 1_000)).acquired).toBe(true);
            expect((yield* store.tryLock(expiring, alice, 1_000)).acquired).toBe(true);
            expect((yield* store.tryLock(renewed, alice, 1_000)).acquired).toBe(true);
            expect((yield* store.tryLock(renewed, alice, 15_000)).acquired).toBe(true);

            yield* eventually(
              "lease expiry",
              1_000 + EXPIRY_SLACK_MS,
              Effect.map(store.tryLock(expiring, bob, 10_000), (r) => r.acquired),
            );
            expect(yield* store.unlock(expiring, alice)).toBe("others");
            expect((yield* store.tryLock(renewed, bob, 10_000)).acquired).toBe(false);
            // An expired lock nobody took is missing (probing by a non-holder changes nothing).
            yield* eventually(
              "abandoned lease expiry",
              EXPIRY_SLACK_MS,
              Effect.map(store.unlock(abandoned, probe), (r) => r === "missing"),
            );
            expect(yield* store.unlock(abandoned, alice)).toBe("missing");
            expect(yield* store.unlock(expiring, bob)).toBe("unlocked");
            expect(yield* store.unlock(renewed, alice)).toBe("unlocked");
          }),
        SLOW_TEST_MS,
      );
    },
  );
