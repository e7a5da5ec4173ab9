/**
 * The MemoryStore contract on the real Hazelcast member (test/infra), plus
 * what only a cluster has: two mesh instances (two clients) sharing it,
 * expiry enforced on the member itself, a key locked by another client,
 * and calls that fail fast while the cluster cannot be reached. Every suite
 * uses maps of its own (a random prefix), so runs can share the member;
 * everything runs on the real clock (the expiry is the member's).
 */
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "@effect/vitest";
import {
  Cause,
  Clock,
  Context,
  Effect,
  Exit,
  Fiber,
  Layer,
  Option,
  Queue,
  Schedule,
  Scope,
} from "effect";
import { Client, HazelcastJsonValue } from "hazelcast-client";
import { afterAll, inject } from "vitest";
import { type Cluster, connect } from "../../src/memory/hazelcast/client.js";
import { makeEntryStore } from "../../src/memory/hazelcast/entries.js";
import { INLINE_MAX_BYTES } from "../../src/memory/hazelcast/stored.js";
import { HazelcastMemoryStore } from "../../src/memory/hazelcast.js";
import {
  type MemoryRecord,
  MemoryStore,
  type StoreEvent,
  type StoreUnavailable,
} from "../../src/memory/store.js";
import { memoryStoreConformance } from "../conformance/memorystore.suite.js";
import { hazelcastClientConfig } from "../infra/hazelcast.js";
import type { InfraAddresses } from "../infra/index.js";

const infra: InfraAddresses = inject("infra");

/** Map prefixes used here; their maps are destroyed at the end. */
const prefixes: string[] = [];
const randomPrefix = (label: string) => {
  const prefix = `${label}_${randomUUID().replaceAll("-", "").slice(0, 12)}_`;
  prefixes.push(prefix);
  return prefix;
};

afterAll(async () => {
  const client = await Client.newHazelcastClient(hazelcastClientConfig(infra.hazelcastMembers));
  try {
    for (const prefix of prefixes) {
      for (const name of ["meta", "data", "branches", "locks"]) {
        await (await client.getMap(`${prefix}${name}`)).destroy().catch(() => {});
      }
    }
  } finally {
    await client.shutdown();
  }
});

const storeLayer = (mapPrefix: string, members = infra.hazelcastMembers) =>
  HazelcastMemoryStore.layer({ members, clusterName: "dev", mapPrefix });

memoryStoreConformance("hazelcast", () => storeLayer(randomPrefix("conf")));

/** A store of its own (a mesh instance with its own client), closed with the test's scope. */
const instance = (mapPrefix: string, members?: string[]) =>
  Layer.build(storeLayer(mapPrefix, members)).pipe(Effect.map(Context.get(MemoryStore)));

const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

const recordAt = (now: number, fields: Partial<MemoryRecord> = {}): MemoryRecord => {
  const executionId = fields.executionId ?? unique("EXEC");
  const branchPath = fields.branchPath ?? "main";
  const ttlMs = fields.ttlMs ?? 60_000;
  const allocateTime = fields.allocateTime ?? now;
  return {
    address: `${executionId}:FLOW:PROCESS:${branchPath}:1:Result`,
    executionId,
    flowId: "FLOW",
    stepType: "PROCESS",
    branchPath,
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
    lastWriteTime: now,
    ttlMs,
    maxIdleMs: 30_000,
    expireTime: allocateTime + ttlMs,
    ...fields,
  };
};

const next = (r: MemoryRecord, fields: Partial<MemoryRecord> = {}): MemoryRecord => ({
  ...r,
  version: r.version + 1,
  revision: r.revision + 1,
  ...fields,
});

const eventAbout = (queue: Queue.Dequeue<StoreEvent>, address: string) =>
  Queue.take(queue).pipe(
    Effect.repeat({ until: (e) => e.address === address }),
    Effect.timeoutFail({
      duration: "10 seconds",
      onTimeout: () => new Error(`no event about ${address}`),
    }),
  );

/** The tag of the error an effect failed with (a defect or success is reported as such). */
const failureTag = (exit: Exit.Exit<unknown, { readonly _tag: string }>): string =>
  Exit.match(exit, {
    onSuccess: (value) => `succeeded with ${String(value)}`,
    onFailure: (cause) =>
      Option.match(Cause.failureOption(cause), {
        onNone: () => `no failure: ${Cause.pretty(cause)}`,
        onSome: (e) => e._tag,
      }),
  });

/** A plain client on the member, to look at what the store left there. */
const rawClient = Effect.acquireRelease(
  Effect.promise(() => Client.newHazelcastClient(hazelcastClientConfig(infra.hazelcastMembers))),
  (c) => Effect.promise(() => c.shutdown()),
);

describe("HazelcastMemoryStore", () => {
  it.scopedLive(
    "two mesh instances: one sees the other's events, and compare-and-set holds across them",
    () =>
      Effect.gen(function* () {
        const prefix = randomPrefix("two");
        const a = yield* instance(prefix);
        const b = yield* instance(prefix);
        const seenByB = yield* b.subscribe;
        const seenByA = yield* a.subscribe;

        const now = yield* Clock.currentTimeMillis;
        const record = recordAt(now);
        expect(yield* a.create(record)).toBe(true);
        expect(yield* b.create(record)).toBe(false);
        const created = yield* eventAbout(seenByB, record.address);
        expect(created).toMatchObject({ type: "created", record });

        // 10 writers on each instance, one expected revision: exactly one wins.
        const attempts = Array.from({ length: 20 }, (_, i) => ({
          store: i % 2 === 0 ? a : b,
          record: next(record, { owner: `writer-${i}`, sizeBytes: 1 }),
          data: Uint8Array.of(i),
        }));
        const won = yield* Effect.all(
          attempts.map((w) => w.store.update(record.address, 0, w.record, w.data)),
          { concurrency: "unbounded" },
        );
        expect(won.filter(Boolean)).toHaveLength(1);
        const winner = attempts[won.indexOf(true)];
        for (const store of [a, b]) {
          const read = Option.getOrThrow(yield* store.read(record.address));
          expect(read.entry.record).toEqual(winner?.record);
          expect(read.data).toEqual(winner?.data);
        }
        expect(yield* eventAbout(seenByB, record.address)).toMatchObject({
          type: "updated",
          record: winner?.record,
        });
        expect(yield* eventAbout(seenByA, record.address)).toMatchObject({ type: "created" });
        expect(yield* eventAbout(seenByA, record.address)).toMatchObject({ type: "updated" });

        expect(yield* b.remove(record.address)).toBe(true);
        expect(yield* eventAbout(seenByA, record.address)).toMatchObject({
          type: "removed",
          record: winner?.record,
        });
        expect(yield* a.get(record.address, false)).toEqual(Option.none());

        // Expiry is the member's: reported to both instances.
        const short = recordAt(yield* Clock.currentTimeMillis, { ttlMs: 1_000, maxIdleMs: 1_000 });
        expect(yield* b.create(short)).toBe(true);
        for (const seen of [seenByA, seenByB]) {
          expect((yield* eventAbout(seen, short.address)).type).toBe("created");
          expect(yield* eventAbout(seen, short.address)).toMatchObject({
            type: "expired",
            record: short,
          });
        }

        // Locks are shared too.
        const resource = unique("lock");
        expect((yield* a.tryLock(resource, "alice", 10_000)).acquired).toBe(true);
        expect((yield* b.tryLock(resource, "bob", 10_000)).acquired).toBe(false);
        expect(yield* b.unlock(resource, "bob")).toBe("others");
        expect(yield* b.unlock(resource, "alice")).toBe("unlocked");
      }),
    60_000,
  );

  it.scopedLive(
    "update events flow while someone subscribes: the last one leaving stops them, the next one starts them",
    () =>
      Effect.gen(function* () {
        const prefix = randomPrefix("updates");
        const writer = yield* instance(prefix);
        const watcher = yield* instance(prefix);
        const record = recordAt(yield* Clock.currentTimeMillis);
        expect(yield* writer.create(record)).toBe(true);
        let current = record;
        const write = Effect.suspend(() => {
          const written = next(current);
          return writer.update(record.address, current.revision, written).pipe(
            Effect.map((ok) => {
              expect(ok).toBe(true);
              current = written;
              return written;
            }),
          );
        });
        const updatedTo = (queue: Queue.Dequeue<StoreEvent>, written: MemoryRecord) =>
          eventAbout(queue, record.address).pipe(
            Effect.repeat({ until: (e) => e.type === "updated" }),
            Effect.map((e) => expect(e.record).toEqual(written)),
          );

        const first = yield* Scope.make();
        const second = yield* Scope.make();
        const a = yield* Scope.extend(watcher.subscribe, first);
        const b = yield* Scope.extend(watcher.subscribe, second);
        const seenByBoth = yield* write;
        yield* updatedTo(a, seenByBoth);
        yield* updatedTo(b, seenByBoth);

        // One of two leaves: the other still gets them.
        yield* Scope.close(first, Exit.void);
        yield* updatedTo(b, yield* write);

        // Nobody left, then a new subscriber: they flow again.
        yield* Scope.close(second, Exit.void);
        yield* write;
        const c = yield* watcher.subscribe;
        yield* updatedTo(c, yield* write);
      }),
    30_000,
  );

  it.scopedLive("expiry is set on the member: update keeps the TTL from allocation", () =>
    Effect.gen(function* () {
      const prefix = randomPrefix("ttl");
      const store = yield* instance(prefix);
      const raw = yield* rawClient;
      const meta = yield* Effect.promise(() =>
        raw.getMap<string, HazelcastJsonValue>(`${prefix}meta`),
      );
      const data = yield* Effect.promise(() => raw.getMap<string, Buffer>(`${prefix}data`));
      const viewOf = (address: string) =>
        Effect.promise(() => meta.getEntryView(address)).pipe(
          Effect.map((v) =>
            v === null
              ? undefined
              : {
                  ttl: Number(v.ttl),
                  maxIdle: Number(v.maxIdle),
                  // When the TTL alone would end it (max idle may end it sooner).
                  ttlExpiry: Number(v.lastUpdateTime) + Number(v.ttl),
                },
          ),
        );

      // Allocated 40 s ago with a 60 s TTL: 20 s remain.
      const now = yield* Clock.currentTimeMillis;
      const record = recordAt(now, {
        allocateTime: now - 40_000,
        ttlMs: 60_000,
        maxIdleMs: 10_000,
      });
      expect(yield* store.create(record)).toBe(true);
      const created = yield* viewOf(record.address);
      expect(created?.maxIdle).toBe(11_000);
      expect(created?.ttl).toBe(21_000);

      // A replace on the member would drop both (Hazelcast resets them on writes without them).
      // Bytes too large to be inline: they have an entry of their own in `data`.
      const large = (fill: number) => new Uint8Array(INLINE_MAX_BYTES + 1).fill(fill);
      expect(yield* store.update(record.address, 0, next(record), large(1))).toBe(true);
      expect(yield* store.update(record.address, 1, next(next(record)))).toBe(true);
      const modified = yield* store.modify(record.address, (current) =>
        Effect.succeed({ record: next(current.record), data: large(3) }),
      );
      expect(Option.getOrThrow(modified).record.revision).toBe(3);
      const updated = yield* viewOf(record.address);
      const at = yield* Clock.currentTimeMillis;
      expect(updated?.maxIdle).toBe(11_000);
      expect(updated?.ttl).toBeLessThanOrEqual(21_000);
      expect(updated?.ttl).toBeGreaterThanOrEqual(20_000);
      // Never before the record's expireTime, at most ~2 s after it.
      expect(updated?.ttlExpiry).toBeGreaterThanOrEqual(record.expireTime);
      expect(updated?.ttlExpiry).toBeLessThanOrEqual(record.expireTime + 2_000);
      expect(updated?.ttlExpiry).toBeGreaterThan(at);

      // One data entry (the replaced bytes are gone), outliving the record a little. The
      // replaced bytes are deleted with the unlock, which a change does not wait for: their
      // delete may still be on its way when another client looks (retried for up to 2 s).
      const ourKeys = Effect.promise(() => data.keySet()).pipe(
        Effect.map((keys) => keys.filter((k) => k.startsWith(`${record.address}#`))),
      );
      const ours = yield* ourKeys.pipe(
        Effect.filterOrFail((keys) => keys.length === 1),
        Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("2 seconds"))),
        Effect.orElse(() => ourKeys),
      );
      expect(ours).toHaveLength(1);
      const dataView = yield* Effect.promise(() => data.getEntryView(ours[0] as string));
      expect(Number(dataView?.maxIdle)).toBe(12_000);
      expect(Number(dataView?.lastUpdateTime) + Number(dataView?.ttl)).toBeGreaterThanOrEqual(
        record.expireTime,
      );

      expect(yield* store.remove(record.address)).toBe(true);
      expect(yield* Effect.promise(() => data.size())).toBe(0);
    }),
  );

  it.scopedLive(
    "an entry past its TTL is gone at once, and its address can be allocated again before the member removes it",
    () =>
      Effect.gen(function* () {
        const store = yield* instance(randomPrefix("lapsed"));
        const events = yield* store.subscribe;
        const now = yield* Clock.currentTimeMillis;
        // 300 ms of TTL left; the member keeps it for 1-2 s more (so the second create
        // below finds it there and expires it itself).
        const record = recordAt(now, { allocateTime: now - 59_700, ttlMs: 60_000 });
        expect(yield* store.create(record)).toBe(true);
        yield* Effect.sleep("400 millis");
        expect(yield* store.get(record.address, false)).toEqual(Option.none());
        expect(yield* store.get(record.address, true)).toEqual(Option.none());
        expect(yield* store.read(record.address)).toEqual(Option.none());
        expect(yield* store.query({ executionId: record.executionId })).toEqual([]);
        expect(yield* store.update(record.address, 0, next(record))).toBe(false);

        const again = recordAt(yield* Clock.currentTimeMillis, {
          executionId: record.executionId,
          owner: "second",
        });
        expect(again.address).toBe(record.address);
        expect(yield* store.create(again)).toBe(true);
        expect(yield* eventAbout(events, record.address)).toMatchObject({
          type: "created",
          record,
        });
        expect(yield* eventAbout(events, record.address)).toMatchObject({
          type: "expired",
          record,
        });
        expect(yield* eventAbout(events, record.address)).toMatchObject({
          type: "created",
          record: again,
        });
        const read = Option.getOrThrow(yield* store.read(again.address));
        expect(read.entry.record).toEqual(again);
        expect(read.data).toEqual(new Uint8Array(0));
      }),
  );

  it.scopedLive(
    "branch prefixes are literal: LIKE wildcards and escapes match only themselves",
    () =>
      Effect.gen(function* () {
        const store = yield* instance(randomPrefix("like"));
        const now = yield* Clock.currentTimeMillis;
        const executionId = unique("EXEC");
        const paths = [
          "main.a%",
          "main.a%.x",
          "main.ab.x",
          "main.a\\",
          "main.a\\.x",
          "main.a_",
          "main.a\\%",
          "main.a\\%.y",
          "main.a\\x.y",
        ];
        for (const branchPath of paths) {
          expect(yield* store.create(recordAt(now, { executionId, branchPath }))).toBe(true);
        }
        const under = (branchPrefix: string) =>
          store
            .query({ executionId, branchPrefix })
            .pipe(Effect.map((found) => found.map((e) => e.record.branchPath).sort()));
        expect(yield* under("main.a%")).toEqual(["main.a%", "main.a%.x"]);
        expect(yield* under("main.a\\")).toEqual(["main.a\\", "main.a\\.x"]);
        expect(yield* under("main.a\\%")).toEqual(["main.a\\%", "main.a\\%.y"]);
        expect(yield* under("main.a_")).toEqual(["main.a_"]);
        expect(yield* under("main.a")).toEqual([]);
      }),
  );

  it.scopedLive("an update waits for another client's lock of the key, bounded", () =>
    Effect.gen(function* () {
      const prefix = randomPrefix("keylock");
      const store = yield* instance(prefix);
      const raw = yield* rawClient;
      const meta = yield* Effect.promise(() => raw.getMap<string, unknown>(`${prefix}meta`));
      const record = recordAt(yield* Clock.currentTimeMillis);
      expect(yield* store.create(record)).toBe(true);

      yield* Effect.promise(() => meta.lock(record.address));
      const started = yield* Clock.currentTimeMillis;
      const blocked = yield* Effect.exit(store.update(record.address, 0, next(record)));
      expect(failureTag(blocked)).toBe("StoreUnavailable");
      expect((yield* Clock.currentTimeMillis) - started).toBeLessThan(6_000);

      // Released meanwhile: it goes through.
      const waiting = yield* Effect.fork(store.update(record.address, 0, next(record)));
      yield* Effect.sleep("500 millis");
      yield* Effect.promise(() => meta.unlock(record.address));
      expect(yield* waiting.await).toEqual(Exit.succeed(true));

      // Changed by the holder of the lock meanwhile: the update reads the record once it has
      // the lock, and its revision check fails.
      yield* Effect.promise(() => meta.lock(record.address));
      const late = yield* Effect.fork(store.update(record.address, 1, next(next(record))));
      yield* Effect.sleep("500 millis");
      const changed = { ...next(next(record)), _inline: "" };
      yield* Effect.promise(() =>
        meta.set(record.address, new HazelcastJsonValue(JSON.stringify(changed))),
      );
      yield* Effect.promise(() => meta.unlock(record.address));
      expect(yield* late.await).toEqual(Exit.succeed(false));

      // Given up (interrupted) while waiting on the member: the lock it is granted later is
      // released at once, not held for the lease (15 s).
      yield* Effect.promise(() => meta.lock(record.address));
      const abandoned = yield* Effect.fork(store.update(record.address, 1, next(next(record))));
      yield* Effect.sleep("300 millis");
      yield* Fiber.interrupt(abandoned);
      yield* Effect.promise(() => meta.unlock(record.address));
      expect(yield* Effect.promise(() => meta.tryLock(record.address, 3_000))).toBe(true);
      yield* Effect.promise(() => meta.unlock(record.address));
    }),
  );

  it.scopedLive(
    "calls to the cluster: a change is one locked pass, a read one get of inline bytes, a read of 100 one getAll per map",
    () =>
      Effect.gen(function* () {
        const cluster = yield* connect({
          members: infra.hazelcastMembers,
          clusterName: "dev",
          mapPrefix: randomPrefix("calls"),
        });
        yield* cluster.ping.pipe(Effect.retry({ times: 50 }));
        const calls: string[] = [];
        const counted: Cluster = {
          ...cluster,
          onMeta: (what, op, timeout) =>
            Effect.suspend(() => {
              calls.push(`meta.${what}`);
              return cluster.onMeta(what, op, timeout);
            }),
          onData: (what, op, timeout) =>
            Effect.suspend(() => {
              calls.push(`data.${what}`);
              return cluster.onData(what, op, timeout);
            }),
          fire: (what, op) => {
            calls.push(`sent.${what}`);
            cluster.fire(what, op);
          },
        };
        const store = makeEntryStore(counted);
        const now = yield* Clock.currentTimeMillis;
        const executionId = unique("EXEC");
        const records = Array.from({ length: 100 }, (_, i) =>
          recordAt(now, {
            executionId,
            stepId: `${i}`,
            address: `${executionId}:FLOW:PROCESS:main:${i}:Result`,
          }),
        );
        for (const r of records) expect(yield* store.create(r)).toBe(true);
        const [first] = records as [MemoryRecord];

        const write = (data: Uint8Array) =>
          Effect.gen(function* () {
            calls.length = 0;
            const written = yield* store.modify(first.address, (current) =>
              Effect.succeed({ record: next(current.record), data }),
            );
            expect(Option.isSome(written)).toBe(true);
            return [...calls];
          });
        const read = (address: string) =>
          Effect.gen(function* () {
            calls.length = 0;
            const found = yield* store.read(address);
            expect(Option.isSome(found)).toBe(true);
            return { calls: [...calls], data: Option.getOrThrow(found).data };
          });

        // Small bytes live in the record: one value to write, one to read.
        expect(yield* write(Uint8Array.of(1))).toEqual([
          "meta.tryLock, getEntryView",
          "meta.set",
          "sent.unlock",
        ]);
        expect(yield* read(first.address)).toEqual({ calls: ["meta.get"], data: Uint8Array.of(1) });

        // Large ones in `data`, under a fresh key per version; the replaced ones go with the unlock.
        const large = new Uint8Array(INLINE_MAX_BYTES + 1).fill(7);
        expect(yield* write(large)).toEqual([
          "meta.tryLock, getEntryView",
          "data.set",
          "meta.set",
          "sent.unlock",
        ]);
        expect(yield* write(large)).toEqual([
          "meta.tryLock, getEntryView",
          "data.set",
          "meta.set",
          "sent.unlock, deleting replaced bytes",
        ]);
        expect(yield* read(first.address)).toEqual({
          calls: ["meta.get", "data.get"],
          data: large,
        });

        calls.length = 0;
        const many = yield* store.readMany(records.map((r) => r.address));
        expect(many.every(Option.isSome)).toBe(true);
        expect(calls).toEqual(["meta.getAll", "data.getAll"]);

        // Back to small bytes: the large ones are deleted with the unlock.
        expect(yield* write(Uint8Array.of(2))).toEqual([
          "meta.tryLock, getEntryView",
          "meta.set",
          "sent.unlock, deleting replaced bytes",
        ]);
        calls.length = 0;
        const inline = yield* store.readMany(records.map((r) => r.address));
        expect(inline.map((f) => Option.getOrThrow(f).data.length)).toEqual(
          records.map((_, i) => (i === 0 ? 1 : 0)),
        );
        expect(calls).toEqual(["meta.getAll"]);
      }),
  );

  it.live("options that cannot work fail the layer; an unreachable cluster does not", () =>
    Effect.gen(function* () {
      for (const members of [[], ["127.0.0.1:99999"], ["a b:1"]]) {
        const exit = yield* Effect.exit(Effect.scoped(instance(randomPrefix("bad"), members)));
        expect(failureTag(exit), JSON.stringify(members)).toBe("HazelcastMemoryStoreConfigError");
      }
    }),
  );

  it.scopedLive(
    "cluster unreachable: the layer builds and every call fails fast with StoreUnavailable",
    () =>
      Effect.gen(function* () {
        const started = yield* Clock.currentTimeMillis;
        const store = yield* instance(randomPrefix("down"), ["127.0.0.1:1"]);
        expect((yield* Clock.currentTimeMillis) - started).toBeLessThan(2_000);

        // Addresses of their own: calls on one address wait for each other (bounded as well).
        const record = recordAt(started);
        const other = recordAt(started);
        const third = recordAt(started);
        const fourth = recordAt(started);
        const calls: ReadonlyArray<readonly [string, Effect.Effect<unknown, StoreUnavailable>]> = [
          ["ping", store.ping],
          [
            "create and update on one address",
            Effect.all([store.create(record), store.update(record.address, 0, next(record))], {
              concurrency: "unbounded",
            }),
          ],
          ["create", store.create(record)],
          ["get", store.get(record.address, false)],
          ["get touching", store.get(record.address, true)],
          ["read", store.read(record.address)],
          ["readMany", store.readMany([record.address, other.address])],
          ["update", store.update(other.address, 0, next(other), Uint8Array.of(1))],
          [
            "modify",
            store.modify(fourth.address, (current) => Effect.succeed({ record: current.record })),
          ],
          ["remove", store.remove(third.address)],
          ["query", store.query({ executionId: record.executionId })],
          ["subscribe", Effect.scoped(store.subscribe)],
          ["branches.list", store.branches.list(record.executionId)],
          ["tryLock", store.tryLock("resource", "holder", 1_000)],
          ["unlock", store.unlock("resource", "holder")],
        ];
        // All at once. Each call is bounded by 3 s (a change may wait 2 s more for another
        // instance's key lock): it must fail with StoreUnavailable within that, never hang.
        const outcomes = yield* Effect.forEach(
          calls,
          ([name, effect]) =>
            Effect.exit(
              effect.pipe(
                Effect.timeoutFail({
                  duration: name === "update" || name === "modify" ? "6 seconds" : "4 seconds",
                  onTimeout: () => ({ _tag: "Hung" }),
                }),
              ),
            ).pipe(Effect.map((exit) => ({ name, tag: failureTag(exit) }))),
          { concurrency: "unbounded" },
        );
        for (const { name, tag } of outcomes) {
          expect(tag, name).toBe("StoreUnavailable");
        }
      }),
    60_000,
  );
});
