/**
 * DocStore on MongoDB through the official driver; also correct on FerretDB
 * v1 (the MongoDB wire protocol over SQLite).
 *
 * Availability: the client connects lazily and reconnects by itself, so the
 * layer builds while the database is down and every call fails with
 * StoreUnavailable until it is back: at once when the driver's monitor
 * found no server answering (see mongodb/availability.ts), else within
 * ~2 s, the server selection timeout (see mongodb/errors.ts for which
 * driver errors mean that).
 *
 * The parts, under mongodb/: codec.ts (the stored form: escaped keys,
 * wrapped nested arrays, BSON back to JSON), filters.ts (predicates, sort and
 * keyset positions as filters), errors.ts (driver errors), claims.ts
 * (atomic writes and counters on FerretDB), collection.ts (one collection),
 * pool.ts (the connection pools, counted for the DataStore's gauges),
 * availability.ts (calls fail at once while no server answers its monitor).
 */
import { Context, Data, Duration, Effect, Layer, Schedule } from "effect";
import { MongoClient, type MongoClientOptions } from "mongodb";
import { trackAvailability } from "./mongodb/availability.js";
import { makeClaims, type WriteMode } from "./mongodb/claims.js";
import { type Counter, fieldPath, toJson } from "./mongodb/codec.js";
import { makeCollection } from "./mongodb/collection.js";
import { isDuplicateKey, run } from "./mongodb/errors.js";
import { MongoPoolStats, trackPools } from "./mongodb/pool.js";
import { DocStore, type DocStoreShape, StoreUnavailable } from "./store.js";

export { MongoPoolStats, type PoolSnapshot } from "./mongodb/pool.js";

/** An index to create at start-up (idempotent), e.g. `{ collection: "entities", keys: { kind: 1, updateTime: -1 } }`. */
export interface MongoIndex {
  readonly collection: string;
  /** Dotted field paths, in index order. */
  readonly keys: Readonly<Record<string, 1 | -1>>;
  readonly unique?: boolean;
}

export interface MongoStoreOptions {
  readonly uri: string;
  readonly database: string;
  /** Created in the background once the database is reachable; failures are logged, never fatal. */
  readonly indexes?: ReadonlyArray<MongoIndex>;
  /**
   * How conditional writes and counters are made atomic. `native`: one
   * atomic driver call (MongoDB). `claims`: claim records (FerretDB v1).
   * `auto` (default): `claims` when the server says it is FerretDB.
   */
  readonly writes?: "auto" | "native" | "claims";
}

/** The options cannot work at all (malformed URI, invalid database name): a start-up failure. */
export class MongoStoreConfigError extends Data.TaggedError("MongoStoreConfigError")<{
  readonly message: string;
  readonly cause: unknown;
}> {}

const DRIVER_OPTIONS: MongoClientOptions = {
  serverSelectionTimeoutMS: 2_000,
  connectTimeoutMS: 2_000,
  socketTimeoutMS: 10_000,
  maxPoolSize: 50,
  // A saturated pool fails the call instead of queueing it without bound.
  waitQueueTimeoutMS: 5_000,
  appName: "floworchestrator-mesh",
};
const PING_TIMEOUT = Duration.millis(1_500);
const CLOSE_TIMEOUT = Duration.seconds(5);

/** Counter documents `{ _id: name, seq }` (on FerretDB only a hint of the highest number taken). */
const COUNTERS = "_counters";

const make = (options: MongoStoreOptions) =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope;
    // Only parses: no I/O happens until the first call, so a database that is down cannot fail the start.
    const client = yield* Effect.acquireRelease(
      Effect.try({
        try: () => new MongoClient(options.uri, DRIVER_OPTIONS),
        catch: (e) =>
          new MongoStoreConfigError({
            message: `invalid MongoDB URI: ${(e as Error).message}`,
            cause: e,
          }),
      }),
      (c) =>
        Effect.tryPromise(() => c.close()).pipe(
          Effect.timeout(CLOSE_TIMEOUT),
          Effect.catchAllCause((cause) =>
            Effect.logWarning("closing the MongoDB client failed", cause),
          ),
        ),
    );
    const db = yield* Effect.try({
      try: () => client.db(options.database),
      catch: (e) =>
        new MongoStoreConfigError({
          message: `invalid MongoDB database name ${JSON.stringify(options.database)}: ${(e as Error).message}`,
          cause: e,
        }),
    });
    // Listening from before the first operation, so every connection is seen from its start.
    const pools = yield* Effect.acquireRelease(
      Effect.sync(() => trackPools(client)),
      (p) => Effect.sync(p.stop),
    );
    // Store calls fail at once while the database is known unreachable (the ping is not gated).
    const availability = yield* Effect.acquireRelease(
      Effect.sync(() => trackAvailability(client)),
      (a) => Effect.sync(a.stop),
    );
    const counters = db.collection<Counter>(COUNTERS);
    const claims = makeClaims(db, counters, scope);

    let mode: WriteMode | undefined =
      options.writes === undefined || options.writes === "auto" ? undefined : options.writes;
    /** Decided on the first write (it needs the server); concurrent first writers may both ask. */
    const writeMode: Effect.Effect<WriteMode, StoreUnavailable> = Effect.suspend(() =>
      mode !== undefined
        ? Effect.succeed(mode)
        : run(() => client.db("admin").command({ buildInfo: 1 })).pipe(
            Effect.map(
              (info): WriteMode => (typeof info.ferretdbVersion === "string" ? "claims" : "native"),
            ),
            Effect.tap((m) => {
              mode = m;
              return Effect.logInfo(
                m === "claims"
                  ? "datastore: FerretDB detected; conditional writes and counters use claim records"
                  : "datastore: MongoDB detected; conditional writes use atomic driver calls",
              );
            }),
          ),
    );

    /** MongoDB: one atomic upsert; two first uses may both insert, the loser retries once as an update. */
    const incrementCounter = (name: string) => {
      const inc = () =>
        counters.findOneAndUpdate(
          { _id: name },
          { $inc: { seq: 1 } },
          { upsert: true, returnDocument: "after" },
        );
      return run(() =>
        inc().catch((e: unknown) => (isDuplicateKey(e) ? inc() : Promise.reject(e))),
      ).pipe(Effect.map((doc) => toJson(doc?.seq) as number));
    };

    const indexes = options.indexes ?? [];
    if (indexes.length > 0) {
      yield* Effect.forEach(
        indexes,
        (ix) =>
          run(() =>
            db.collection(ix.collection).createIndex(
              Object.entries(ix.keys).map(([path, direction]): [string, 1 | -1] => [
                fieldPath(path),
                direction,
              ]),
              { unique: ix.unique ?? false },
            ),
          ),
        { discard: true },
      ).pipe(
        // Unreachable: keep trying in the background until it is reachable.
        Effect.retry(
          Schedule.exponential(Duration.millis(250)).pipe(
            Schedule.union(Schedule.spaced(Duration.seconds(10))),
          ),
        ),
        Effect.catchAllCause((cause) =>
          Effect.logWarning(
            "datastore: creating MongoDB indexes failed; the next start tries again",
            cause,
          ),
        ),
        Effect.forkIn(scope),
      );
    }

    const store: DocStoreShape = {
      collection: (name) =>
        availability.gateCollection(makeCollection(db, writeMode, claims)(name)),
      nextSequence: (name) =>
        availability.gate(
          writeMode.pipe(
            Effect.flatMap((m) =>
              m === "native" ? incrementCounter(name) : claims.claimSequence(name),
            ),
          ),
        ),
      ping: run(() => db.command({ ping: 1 })).pipe(
        Effect.timeoutFail({
          duration: PING_TIMEOUT,
          onTimeout: () => new StoreUnavailable({ cause: new Error("MongoDB ping timed out") }),
        }),
        Effect.asVoid,
      ),
      backend: "mongodb",
    };
    return Context.make(DocStore, store).pipe(
      Context.add(MongoPoolStats, { snapshot: pools.snapshot }),
    );
  });

export const MongoStore = {
  /**
   * The store, and the counts of its connection pools; builds without I/O
   * (so also while the database is down). The client closes on release.
   */
  layer: (
    options: MongoStoreOptions,
  ): Layer.Layer<DocStore | MongoPoolStats, MongoStoreConfigError> =>
    Layer.scopedContext(make(options)),
};
