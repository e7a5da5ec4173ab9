/**
 * The MongoDB DocStore against FerretDB: the shared conformance suite, then
 * what only this backend has (unreachable server, stored form, claims,
 * indexes). Every store gets a database of its own, dropped at the end.
 */
import { randomUUID } from "node:crypto";
import * as net from "node:net";
import { afterAll, describe, expect, it } from "@effect/vitest";
import { Duration, Effect, Exit, Layer, Option, Schedule } from "effect";
import { Long, MongoClient, ObjectId } from "mongodb";
import { inject } from "vitest";
import { MongoStore, type MongoStoreOptions } from "../../src/datastore/mongodb.js";
import { DocStore, type DocStoreShape } from "../../src/datastore/store.js";
import { docStoreConformance } from "../conformance/docstore.suite.js";

const uri = inject("infra").mongodbUri;
const databases: string[] = [];
const freshDatabase = (label: string): string => {
  const name = `docstore_${label}_${randomUUID().replaceAll("-", "").slice(0, 10)}`;
  databases.push(name);
  return name;
};

// A direct client, to look at (and tamper with) what the store wrote.
const raw = new MongoClient(uri, { serverSelectionTimeoutMS: 5_000 });
afterAll(async () => {
  for (const name of databases)
    await raw
      .db(name)
      .dropDatabase()
      .catch(() => {});
  await raw.close();
});

docStoreConformance("mongodb (FerretDB)", () =>
  MongoStore.layer({ uri, database: freshDatabase("conformance") }),
);

const withStore = <A, E>(
  options: Partial<MongoStoreOptions> & { database: string },
  f: (store: DocStoreShape) => Effect.Effect<A, E>,
) => Effect.flatMap(DocStore, f).pipe(Effect.provide(MongoStore.layer({ uri, ...options })));

/** Milliseconds `effect` took, with its exit. */
/** The call's outcome, or a `Hung` failure if it has none within `deadline`. */
const within = <A, E>(deadline: Duration.DurationInput, effect: Effect.Effect<A, E>) =>
  Effect.exit(
    effect.pipe(Effect.timeoutFail({ duration: deadline, onTimeout: () => ({ _tag: "Hung" }) })),
  );

const failureTag = (exit: Exit.Exit<unknown, { _tag: string }>) =>
  Exit.match(exit, {
    onSuccess: () => "success",
    onFailure: (cause) => (cause._tag === "Fail" ? cause.error._tag : cause._tag),
  });

describe("MongoDB DocStore: unreachable server", () => {
  const closed = "mongodb://127.0.0.1:1/?directConnection=true";

  it.live("builds, and every call fails fast with StoreUnavailable", () =>
    Effect.gen(function* () {
      const store = yield* DocStore; // the layer itself needs no server
      const c = store.collection("things");
      const calls: Array<Effect.Effect<unknown, { _tag: string }>> = [
        store.ping,
        c.get("a"),
        c.insert({ _id: "a" }),
        c.update("a", { x: 1 }, { path: "x", value: null }),
        c.find({ where: [{ path: "x", op: "prefix", value: "p" }], limit: 1 }),
        store.nextSequence("n"),
      ];
      // Server selection gives up after ~2 s: each call must fail well within 5 s, not hang.
      const results = yield* Effect.all(
        calls.map((call) => within("5 seconds", call)),
        { concurrency: "unbounded" },
      );
      for (const exit of results) expect(failureTag(exit)).toBe("StoreUnavailable");
    }).pipe(Effect.provide(MongoStore.layer({ uri: closed, database: "unused" }))),
  );

  it.live("answers again once the server is back, without a restart", () =>
    Effect.gen(function* () {
      // A port where nothing listens yet; later a proxy to FerretDB opens on it.
      const port = yield* Effect.promise(freePort);
      const target = new URL(uri.replace(/^mongodb:/, "http:"));
      const database = freshDatabase("recover");
      yield* withStore(
        { uri: `mongodb://127.0.0.1:${port}/?directConnection=true`, database },
        (store) =>
          Effect.gen(function* () {
            expect(failureTag(yield* Effect.exit(store.ping))).toBe("StoreUnavailable");
            yield* Effect.acquireRelease(
              Effect.promise(() => startProxy(port, target.hostname, Number(target.port))),
              (proxy) => Effect.promise(() => closeProxy(proxy)),
            );
            yield* store.ping.pipe(
              Effect.retry(
                Schedule.spaced(Duration.millis(200)).pipe(Schedule.upTo(Duration.seconds(15))),
              ),
            );
            expect(yield* store.collection("things").insert({ _id: "a" })).toBe(true);
          }).pipe(Effect.scoped),
      );
    }),
  );

  it.effect("a malformed URI fails the start", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        Layer.build(MongoStore.layer({ uri: "postgres://nope", database: "x" })).pipe(
          Effect.scoped,
        ),
      );
      expect(error._tag).toBe("MongoStoreConfigError");
    }),
  );
});

describe("MongoDB DocStore: stored form", () => {
  it.effect(
    "any JSON key round-trips; FerretDB-unsafe keys are stored escaped and queryable",
    () => {
      const database = freshDatabase("keys");
      return withStore({ database }, (store) =>
        Effect.gen(function* () {
          const c = store.collection("things");
          const doc = {
            _id: "k",
            "a.b": 1,
            $set: { "%": "pct", "x\u0000y": [{ $where: true }] },
            "%rev": "mine",
            matrix: [[1, [2]], [], [{ "%a": [3] }]],
            wrapperLookalike: { "%a": [4] },
          };
          expect(yield* c.insert(doc)).toBe(true);
          expect(yield* c.get("k")).toEqual(Option.some(doc));
          // A path segment is a key, never an operator.
          const found = yield* c.find({
            where: [{ path: "$set.%", op: "eq", value: "pct" }],
            limit: 5,
          });
          expect(found).toEqual([doc]);
          const updated = yield* c.update("k", { "a.b": 2 }, { path: "%rev", value: "mine" });
          expect(Option.map(updated, (d) => d["a.b"])).toEqual(Option.some(2));

          const stored = yield* Effect.promise(() =>
            raw
              .db(database)
              .collection("things")
              .findOne({ _id: "k" as never }),
          );
          expect(Object.keys(stored ?? {})).toEqual(
            expect.arrayContaining(["a%2Eb", "%24set", "%25rev"]),
          );
          // Queries do not look into nested arrays (as in MongoDB): only the outer elements count.
          expect(
            yield* c.find({ where: [{ path: "matrix", op: "eq", value: 1 }], limit: 5 }),
          ).toEqual([]);
        }),
      );
    },
  );

  it.effect("values another writer left in BSON-only types come back as plain JSON", () => {
    const database = freshDatabase("bson");
    return Effect.gen(function* () {
      const oid = new ObjectId();
      yield* Effect.promise(() =>
        raw
          .db(database)
          .collection("things")
          .insertOne({ _id: "x" as never, oid, at: new Date(0), big: Long.fromNumber(2 ** 40) }),
      );
      const doc = yield* withStore({ database }, (store) => store.collection("things").get("x"));
      expect(doc).toEqual(
        Option.some({
          _id: "x",
          oid: oid.toHexString(),
          at: "1970-01-01T00:00:00.000Z",
          big: 2 ** 40,
        }),
      );
    });
  });

  it.effect("creates the configured indexes in the background", () => {
    const database = freshDatabase("indexes");
    const indexes = [
      { collection: "things", keys: { "meta.kind": 1, at: -1 } as const, unique: true },
    ];
    return withStore({ database, indexes }, () =>
      Effect.promise(async () => {
        for (let i = 0; i < 50; i++) {
          const list = await raw
            .db(database)
            .collection("things")
            .listIndexes()
            .toArray()
            .catch(() => []);
          const found = list.find((ix) => ix.name === "meta.kind_1_at_-1");
          if (found !== undefined) return found;
          await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error("index not created");
      }),
    ).pipe(
      Effect.map((ix) =>
        expect(ix).toMatchObject({ key: { "meta.kind": 1, at: -1 }, unique: true }),
      ),
    );
  });
});

describe("MongoDB DocStore: atomic writes on FerretDB", () => {
  it.live("two instances on one database never hand out a number twice", () => {
    const database = freshDatabase("seq");
    const take = (store: DocStoreShape) =>
      Effect.all(
        Array.from({ length: 30 }, () => store.nextSequence("shared")),
        { concurrency: "unbounded" },
      );
    return withStore({ database }, (a) =>
      withStore({ database }, (b) =>
        Effect.gen(function* () {
          const [x, y] = yield* Effect.all([take(a), take(b)], { concurrency: 2 });
          expect([...x, ...y].sort((p, q) => p - q)).toEqual(
            Array.from({ length: 60 }, (_, i) => i + 1),
          );
        }),
      ),
    );
  });

  it.live("a lagging counter hint never repeats a number; old number records are pruned", () => {
    const database = freshDatabase("hint");
    const db = raw.db(database);
    const records = db.collection<{ _id: string; at: number }>("_sequence_claims");
    const counters = db.collection<{ _id: string; seq: number }>("_counters");
    const key = (n: number) => `"n":${String(n).padStart(16, "0")}`;
    return withStore({ database }, (store) =>
      Effect.gen(function* () {
        // Numbers 1..2040 were taken long ago, but the hint lags (a lost race, a failed raise).
        yield* Effect.promise(async () => {
          const old = Array.from({ length: 2040 }, (_, i) => ({ _id: key(i + 1), at: 0 }));
          await records.insertMany(old);
          await counters.insertOne({ _id: "n", seq: 2000 });
        });
        const taken = yield* Effect.all(
          Array.from({ length: 8 }, () => store.nextSequence("n")),
          { concurrency: "unbounded" },
        );
        expect([...taken].sort((a, b) => a - b)).toEqual(
          Array.from({ length: 8 }, (_, i) => 2041 + i),
        );
        // 2048 was a pruning point: records below 2048 - 1024 older than an hour go.
        const left = yield* Effect.promise(async () => {
          for (let i = 0; i < 50; i++) {
            if ((await records.countDocuments({ at: 0 })) < 2040) break;
            await new Promise((r) => setTimeout(r, 100));
          }
          return records.find({}, { sort: { _id: 1 }, limit: 1 }).toArray();
        });
        expect(left.map((r) => r._id)).toEqual([key(1024)]);
        expect(yield* store.nextSequence("n")).toBe(2049);
      }),
    );
  });

  it.live("two instances racing conditional updates: exactly one wins each round", () => {
    const database = freshDatabase("race");
    return withStore({ database }, (a) =>
      withStore({ database }, (b) =>
        Effect.gen(function* () {
          const [ca, cb] = [a.collection("things"), b.collection("things")];
          yield* ca.insert({ _id: "x", version: 0 });
          for (let round = 0; round < 5; round++) {
            const results = yield* Effect.all(
              Array.from({ length: 10 }, (_, i) =>
                (i % 2 === 0 ? ca : cb).update(
                  "x",
                  { version: round + 1, by: i },
                  { path: "version", value: round },
                ),
              ),
              { concurrency: "unbounded" },
            );
            expect(results.filter(Option.isSome)).toHaveLength(1);
          }
          const removes = yield* Effect.all(
            Array.from({ length: 6 }, (_, i) =>
              (i % 2 === 0 ? ca : cb).remove("x", { path: "version", value: 5 }),
            ),
            { concurrency: "unbounded" },
          );
          expect(removes.filter((ok) => ok)).toHaveLength(1);
        }),
      ),
    );
  });

  it.live("a claim left by a writer that died is stepped over; a live one is waited for", () => {
    const database = freshDatabase("claims");
    return withStore({ database }, (store) =>
      Effect.gen(function* () {
        const c = store.collection("things");
        yield* c.insert({ _id: "x", v: 0 });
        const claims = raw.db(database).collection<{ _id: string; at: number }>("_write_claims");
        const rev = yield* Effect.promise(async () => {
          const stored = await raw
            .db(database)
            .collection("things")
            .findOne({ _id: "x" as never });
          return stored?.["%rev"] as string;
        });
        // Dead writer: its claim on this version is older than the lease.
        yield* Effect.promise(() =>
          claims.insertOne({ _id: JSON.stringify(["things", "x", rev, 0]), at: 0 }),
        );
        const first = yield* c.update("x", { v: 1 }, { path: "v", value: 0 });
        expect(Option.map(first, (d) => d.v)).toEqual(Option.some(1));

        // Live writer: the update waits until the claim is released, then decides.
        const rev2 = yield* Effect.promise(async () => {
          const stored = await raw
            .db(database)
            .collection("things")
            .findOne({ _id: "x" as never });
          return stored?.["%rev"] as string;
        });
        const key = JSON.stringify(["things", "x", rev2, 0]);
        yield* Effect.promise(() => claims.insertOne({ _id: key, at: Date.now() }));
        const pending = yield* Effect.fork(c.update("x", { v: 2 }, { path: "v", value: 1 }));
        yield* Effect.sleep(Duration.millis(300));
        yield* Effect.promise(() => claims.deleteOne({ _id: key }));
        const second = yield* pending.await.pipe(Effect.flatten);
        expect(Option.map(second, (d) => d.v)).toEqual(Option.some(2));
        expect(yield* Effect.promise(() => claims.countDocuments())).toBe(0);
      }),
    );
  });

  it.effect("writes: native (one driver call) works on FerretDB without concurrency", () => {
    const database = freshDatabase("native");
    return withStore({ database, writes: "native" }, (store) =>
      Effect.gen(function* () {
        const c = store.collection("things");
        expect(yield* c.insert({ _id: "x", version: 1 })).toBe(true);
        expect(yield* c.update("x", { version: 2 }, { path: "version", value: 0 })).toEqual(
          Option.none(),
        );
        expect(yield* c.update("x", { version: 2 }, { path: "version", value: 1 })).toEqual(
          Option.some({ _id: "x", version: 2 }),
        );
        expect(yield* c.remove("x", { path: "version", value: 1 })).toBe(false);
        expect(yield* c.remove("x", { path: "version", value: 2 })).toBe(true);
        expect(yield* store.nextSequence("n")).toBe(1);
        expect(yield* store.nextSequence("n")).toBe(2);
        // Nothing of the claim machinery was written.
        const names = yield* Effect.promise(() => raw.db(database).listCollections().toArray());
        expect(names.map((n) => n.name).sort()).toEqual(["_counters", "things"]);
      }),
    );
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A TCP pipe from 127.0.0.1:`port` to `host:targetPort`. */
function startProxy(port: number, host: string, targetPort: number): Promise<net.Server> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  server.on("close", () => {
    for (const s of sockets) s.destroy();
  });
  (server as net.Server & { sockets?: Set<net.Socket> }).sockets = sockets;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

function closeProxy(server: net.Server): Promise<void> {
  const sockets = (server as net.Server & { sockets?: Set<net.Socket> }).sockets;
  for (const s of sockets ?? []) s.destroy();
  return new Promise((resolve) => server.close(() => resolve()));
}
