/**
 * DocStore on MongoDB through the official driver; also correct on FerretDB
 * v1 (the MongoDB wire protocol over SQLite).
 *
 * Availability: the client connects lazily and reconnects by itself, so the
 * layer builds while the database is down and every call fails with
 * StoreUnavailable (within ~2 s, the server selection timeout) until it is
 * back. Driver errors meaning "cannot reach / timed out / not primary" become
 * StoreUnavailable; a duplicate `_id` on insert is `false`; anything else is
 * a defect.
 *
 * Queries are built here from the typed Predicate AST; no caller object ever
 * reaches the server as a filter. Field names and path segments are escaped
 * (`%`, `.`, NUL and a leading `$` as `%XX`) because FerretDB rejects keys
 * with `.` or a leading `$` and MongoDB only half supports them; an array
 * directly inside an array (which FerretDB also rejects) is wrapped. So any
 * JSON document round-trips, and a path can never spell an operator.
 *
 * Atomic writes: MongoDB applies `findOneAndUpdate`/`deleteOne` atomically
 * per document, so there one call is a compare-and-set. FerretDB v1 does not:
 * it reads the matching document, then writes it back by `_id` with no
 * re-check (20 concurrent `$inc` upserts of one counter return duplicates),
 * and no multi-document transactions. Its only atomic primitive is the unique
 * `_id` of an insert. So on FerretDB (detected once via `buildInfo`) every
 * update/remove first claims the document's current version by inserting a
 * claim record (see `guarded`), and counters hand out numbers by inserting one
 * record per number (see `claimSequence`).
 */
import { randomUUID } from "node:crypto";
import { Clock, Data, Duration, Effect, Layer, Option, Schedule } from "effect";
import {
  type Document,
  MongoClient,
  MongoClientClosedError,
  type MongoClientOptions,
  type Collection as MongoCollection,
  MongoError,
  MongoNetworkError,
  MongoNotConnectedError,
  MongoOperationTimeoutError,
  MongoServerClosedError,
  MongoServerError,
  MongoServerSelectionError,
  type Sort as MongoSort,
  MongoTopologyClosedError,
} from "mongodb";
import {
  type Collection,
  type Condition,
  type Doc,
  DocStore,
  type DocStoreShape,
  type FindQuery,
  type Json,
  type Predicate,
  StoreUnavailable,
} from "./store.js";

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
/** FerretDB: one record per number taken, `"<name json>:<number, zero-padded>"`. */
const SEQUENCE_CLAIMS = "_sequence_claims";
/** FerretDB: one record per document version being written. */
const WRITE_CLAIMS = "_write_claims";
/** FerretDB: the stored document's version, a random token replaced on every write (never returned). */
const REV = "%rev";

/**
 * A write claim older than this belongs to a writer that died mid-write; a
 * write itself is bounded by the socket timeout, far below it.
 */
const CLAIM_LEASE_MS = 30_000;
/** How long a conditional write waits for another writer's claim before giving up (StoreUnavailable). */
const CLAIM_WAIT_MS = 5_000;
/** Claim attempts per version: each stale claim found moves to the next attempt number. */
const MAX_CLAIM_ATTEMPTS = 8;
/** Sequence records kept per counter beyond the age limit below; older ones are pruned now and then. */
const SEQUENCE_KEEP = 1_024;
const SEQUENCE_KEEP_MS = 60 * 60_000;
const SEQUENCE_WIDTH = 16; // digits of Number.MAX_SAFE_INTEGER

// ---------------------------------------------------------------------------
// Driver errors

/** Server codes meaning "not reachable right now": network, shutdown, elections, time limits. */
const UNAVAILABLE_CODES = new Set([
  6, // HostUnreachable
  7, // HostNotFound
  // AuthenticationFailed: credentials are deployment state, not a bug in the caller; the
  // cause is logged and the mesh reports UNAVAILABLE instead of failing every call as INTERNAL.
  18,
  50, // MaxTimeMSExpired
  89, // NetworkTimeout
  91, // ShutdownInProgress
  133, // FailedToSatisfyReadPreference
  134, // ReadConcernMajorityNotAvailableYet
  189, // PrimarySteppedDown
  202, // NetworkInterfaceExceededTimeLimit
  262, // ExceededTimeLimit
  9001, // SocketException
  10058, // LegacyNotPrimary
  10107, // NotWritablePrimary
  11600, // InterruptedAtShutdown
  11602, // InterruptedDueToReplStateChange
  13435, // NotPrimaryNoSecondaryOk
  13436, // NotPrimaryOrSecondary
]);
const UNAVAILABLE_LABELS = ["RetryableWriteError", "SystemOverloadedError", "ResetPool"];

const isUnavailable = (e: unknown): boolean =>
  e instanceof MongoNetworkError || // includes socket timeouts and cleared pools
  e instanceof MongoServerSelectionError ||
  e instanceof MongoOperationTimeoutError ||
  e instanceof MongoNotConnectedError ||
  // Closed by our own release while a call was in flight (shutdown): the store is gone.
  e instanceof MongoTopologyClosedError ||
  e instanceof MongoClientClosedError ||
  e instanceof MongoServerClosedError ||
  (e instanceof MongoError &&
    (e.name === "MongoWaitQueueTimeoutError" ||
      e.name === "MongoPoolClosedError" ||
      (typeof e.code === "number" && UNAVAILABLE_CODES.has(e.code)) ||
      UNAVAILABLE_LABELS.some((label) => e.hasErrorLabel(label))));

/** What the driver sees: string `_id`s, everything else opaque until decoded. */
type Stored = { _id: string; [field: string]: unknown };

const isDuplicateKey = (e: unknown): boolean => e instanceof MongoServerError && e.code === 11000;

/**
 * Runs one driver call. Everything that builds the request belongs inside
 * `op`, so a bug there (a bad path) is a defect like any other.
 */
const run = <A>(op: () => Promise<A>): Effect.Effect<A, StoreUnavailable> =>
  Effect.tryPromise({ try: op, catch: (e) => e }).pipe(
    Effect.catchAll((e) =>
      isUnavailable(e) ? Effect.fail(new StoreUnavailable({ cause: e })) : Effect.die(e),
    ),
  );

/** Inserts; false when the `_id` exists already. */
const insertOne = (
  coll: MongoCollection<Stored>,
  doc: Stored,
): Effect.Effect<boolean, StoreUnavailable> =>
  run(() =>
    coll.insertOne(doc).then(
      () => true,
      (e: unknown) => {
        if (isDuplicateKey(e)) return false;
        throw e;
      },
    ),
  );

// ---------------------------------------------------------------------------
// Stored form

// Matches what a stored key may not contain (see the module comment).
// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is exactly what must be escaped.
const UNSAFE_KEY = /[%.\x00]|^\$/g;

const encodeKey = (key: string): string =>
  key.replace(UNSAFE_KEY, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`);

const decodeKey = (key: string): string =>
  key.includes("%")
    ? key.replace(/%([0-9A-F]{2})/g, (_, hex: string) =>
        String.fromCharCode(Number.parseInt(hex, 16)),
      )
    : key;

/**
 * FerretDB rejects an array directly inside an array: such an inner array is
 * stored as `{ "%a": [...] }` (no escaped key can be `%a`). MongoDB queries
 * never look inside nested arrays anyway; only sorting on such a field and
 * paths indexing into them differ.
 */
const NESTED_ARRAY = "%a";

/** JSON as stored: keys escaped, nested arrays wrapped. (`fromEntries` keeps a `__proto__` key as data.) */
const encode = (value: Json, inArray = false): Json => {
  if (Array.isArray(value)) {
    const items = value.map((v) => encode(v, true));
    return inArray ? { [NESTED_ARRAY]: items } : items;
  }
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [encodeKey(k), encode(v)]));
  }
  return value;
};

const encodeFields = (fields: Readonly<Record<string, Json>>): Record<string, Json> =>
  encode(fields) as Record<string, Json>;

/**
 * A stored value back as plain JSON. Only JSON is ever written here; the BSON
 * types another writer might have left are converted where there is an
 * obvious JSON form, and anything else is a defect.
 */
const toJson = (value: unknown): Json => {
  if (value === null || typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number") return value;
  if (Array.isArray(value)) return value.map(toJson);
  if (value instanceof Date) return value.toISOString();
  if (typeof value === "object") {
    const bsonType = (value as { _bsontype?: unknown })._bsontype;
    if (bsonType === undefined) {
      const entries = Object.entries(value);
      const [only] = entries;
      if (entries.length === 1 && only?.[0] === NESTED_ARRAY && Array.isArray(only[1]))
        return toJson(only[1]);
      return Object.fromEntries(entries.map(([k, v]) => [decodeKey(k), toJson(v)]));
    }
    switch (bsonType) {
      case "ObjectId":
        return (value as { toHexString(): string }).toHexString();
      case "Long":
      case "Decimal128":
      case "Int32":
      case "Double":
        return Number(String(value));
    }
    throw new TypeError(`stored value of BSON type ${String(bsonType)} has no JSON form`);
  }
  throw new TypeError(`stored value of type ${typeof value} has no JSON form`);
};

const decodeDoc = (raw: Document): Doc =>
  Object.fromEntries(
    Object.entries(raw)
      .filter(([k]) => k !== REV)
      .map(([k, v]) => [decodeKey(k), toJson(v)]),
  ) as Doc;

const decodeFound = (raw: Document | null): Option.Option<Doc> =>
  raw === null ? Option.none() : Option.some(decodeDoc(raw));

// ---------------------------------------------------------------------------
// Filters

/** A dotted path in stored form: each segment escaped like a key (numeric segments stay array indexes). */
const fieldPath = (path: string): string => {
  const segments = path.split(".");
  if (segments.includes("")) throw new Error(`invalid field path ${JSON.stringify(path)}`);
  return segments.map(encodeKey).join(".");
};

const allOf = (filters: ReadonlyArray<Document>): Document => {
  // A lone `{ _id: "…" }` stays as it is: it is the only filter FerretDB answers from its index.
  if (filters.length === 0) return {};
  if (filters.length === 1) return filters[0] as Document;
  return { $and: [...filters] };
};

/** A regex matching exactly the strings that start with `literal` (Go's RE2 and PCRE read it alike). */
const literalPrefixRegex = (literal: string): string =>
  `^${literal
    .replace(/[\\^$.*+?()[\]{}|]/g, "\\$&")
    // A BSON regex is a C string: NUL goes as an escape.
    .replaceAll("\0", "\\x00")}`;

/**
 * One predicate as a filter, MongoDB semantics throughout (type brackets,
 * any-element matching on arrays, `eq null` matching missing). `prefix` is an
 * anchored regex built from the escaped literal rather than a `$gte/$lt`
 * range: on an array field the two bounds of a range may be met by different
 * elements (`["a", "z"]` would match prefix "m"), and no finite upper bound
 * covers every UTF-8 continuation. MongoDB still uses an index for it.
 */
const predicateFilter = (p: Predicate): Document => {
  const field = fieldPath(p.path);
  switch (p.op) {
    case "in":
      return { [field]: { $in: [...p.values] } };
    case "prefix":
      return { [field]: { $regex: literalPrefixRegex(p.value) } };
    case "ne":
      // What `$ne` means in MongoDB. FerretDB's own `$ne` (and `$not`) wrongly
      // matches when only some of an array's subdocuments differ.
      return { $nor: [{ [field]: { $eq: p.value } }] };
    default:
      return { [field]: { [`$${p.op}`]: p.value } };
  }
};

/** One document by `_id`, if `condition` holds on it. */
const idFilter = (id: string, condition: Condition | undefined): Document =>
  allOf([
    { _id: id },
    ...(condition ? [{ [fieldPath(condition.path)]: { $eq: condition.value } }] : []),
  ]);

/** MongoDB's sort order of type brackets, as `$type` aliases (index = bracket rank). */
const BRACKETS = ["null", "number", "string", "object", "array", "bool"] as const;

const bracketOf = (v: Json): number => {
  if (v === null) return 0;
  if (typeof v === "number") return 1;
  if (typeof v === "string") return 2;
  if (typeof v === "boolean") return 5;
  return Array.isArray(v) ? 4 : 3;
};

/**
 * Documents strictly after `(after.value, after.id)` in sort order: a value
 * beyond it within its type bracket (`$gt`/`$lt` only compare within one),
 * or any value in a bracket beyond it, or the same value with an `_id`
 * beyond. Missing and null are the lowest bracket, so descending they come
 * last through `{ field: null }`.
 */
const keysetFilter = (
  sort: FindQuery["sort"],
  after: NonNullable<FindQuery["after"]>,
): Document => {
  const beyond = sort?.descending === true ? "$lt" : "$gt";
  if (sort === undefined || sort.path === "_id") return { _id: { [beyond]: after.id } };
  const field = fieldPath(sort.path);
  const rank = bracketOf(after.value);
  const value = encode(after.value);
  const clauses: Document[] = [];
  if (rank > 0) clauses.push({ [field]: { [beyond]: value } }); // nothing is beyond null within its bracket
  const laterBrackets = sort.descending ? BRACKETS.slice(1, rank) : BRACKETS.slice(rank + 1);
  if (laterBrackets.length > 0) clauses.push({ [field]: { $type: [...laterBrackets] } });
  if (sort.descending && rank > 0) clauses.push({ [field]: { $eq: null } });
  clauses.push({ [field]: { $eq: value }, _id: { [beyond]: after.id } });
  return { $or: clauses };
};

const sortSpec = (sort: FindQuery["sort"]): MongoSort => {
  if (sort === undefined) return [["_id", 1]];
  const direction = sort.descending ? -1 : 1;
  return sort.path === "_id"
    ? [["_id", direction]]
    : [
        [fieldPath(sort.path), direction],
        ["_id", direction],
      ];
};

// ---------------------------------------------------------------------------
// The store

type WriteMode = "native" | "claims";

/** One step of a claimed write: its result, or why to go round again. */
type Attempt<A> =
  | { readonly _tag: "Done"; readonly value: A }
  | { readonly _tag: "Busy" }
  | { readonly _tag: "Moved" };

const sequenceKey = (name: string, n: number): string =>
  `${JSON.stringify(name)}:${String(n).padStart(SEQUENCE_WIDTH, "0")}`;

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
    const counters = db.collection<{ _id: string; seq: number }>(COUNTERS);
    const sequenceClaims = db.collection<Stored>(SEQUENCE_CLAIMS);
    const writeClaims = db.collection<Stored>(WRITE_CLAIMS);

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

    // --- FerretDB: claimed writes -------------------------------------------

    /**
     * Takes the claim on version `rev` of a document: keys to release, or
     * undefined when a live writer holds it. A claim left by a writer that
     * died (older than the lease) is stepped over with the next attempt
     * number, so exactly one taker wins each time.
     */
    const claimVersion = (coll: string, id: string, rev: string | null) =>
      Effect.gen(function* () {
        const keys: string[] = [];
        for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt++) {
          const key = JSON.stringify([coll, id, rev, attempt]);
          keys.push(key);
          const at = yield* Clock.currentTimeMillis;
          if (yield* insertOne(writeClaims, { _id: key, at })) return keys;
          const holder = yield* run(() => writeClaims.findOne({ _id: key }));
          // Gone already (its writer finished: the version moved) or held by a live writer.
          if (holder === null || at - Number(holder.at) < CLAIM_LEASE_MS) return undefined;
        }
        return undefined;
      });

    /**
     * Releases a claim, with the stale ones stepped over for it. Deleting is
     * safe at any time: a late taker of a released claim finds the version
     * moved on. A failure only delays the next writer until the lease ends.
     */
    const releaseClaim = (keys: ReadonlyArray<string>) =>
      run(() => writeClaims.deleteMany({ _id: { $in: [...keys] } })).pipe(
        Effect.catchAllCause((cause) =>
          Effect.logDebug("datastore: releasing a write claim failed", cause),
        ),
      );

    /**
     * One conditional write under FerretDB: read the version (the server
     * evaluates the condition on a committed document), claim that version,
     * write only if the document is still at it, release. Two writers of one
     * version cannot both hold its claim, and the loser reads again: the
     * condition is decided on the winner's result. `write` gets the filter
     * pinning the version and answers None when it matched nothing.
     */
    const guarded = <A>(
      coll: MongoCollection<Stored>,
      id: string,
      condition: Condition | undefined,
      onMissing: A,
      write: (filter: Document) => Effect.Effect<Option.Option<A>, StoreUnavailable>,
    ) =>
      Effect.gen(function* () {
        const deadline = (yield* Clock.currentTimeMillis) + CLAIM_WAIT_MS;
        for (;;) {
          const current = yield* run(() =>
            coll.findOne(idFilter(id, condition), { projection: { [REV]: 1 } }),
          );
          if (current === null) return onMissing;
          const rev = typeof current[REV] === "string" ? current[REV] : null;
          const attempt = yield* Effect.acquireUseRelease(
            claimVersion(coll.collectionName, id, rev),
            (keys): Effect.Effect<Attempt<A>, StoreUnavailable> =>
              keys === undefined
                ? Effect.succeed({ _tag: "Busy" })
                : write({ _id: id, [REV]: { $eq: rev } }).pipe(
                    Effect.map(
                      Option.match({
                        onSome: (value) => ({ _tag: "Done", value }),
                        onNone: () => ({ _tag: "Moved" }), // written by the previous claim holder: read again
                      }),
                    ),
                  ),
            (keys) => (keys === undefined ? Effect.void : releaseClaim(keys)),
          );
          if (attempt._tag === "Done") return attempt.value;
          if ((yield* Clock.currentTimeMillis) > deadline) {
            return yield* Effect.fail(
              new StoreUnavailable({
                cause: new Error(
                  `document ${coll.collectionName}/${id} stayed claimed by another writer for ${CLAIM_WAIT_MS} ms`,
                ),
              }),
            );
          }
          if (attempt._tag === "Busy") yield* Effect.sleep(Duration.millis(2 + Math.random() * 18));
        }
      });

    // --- Collections ----------------------------------------------------------

    const collection = (name: string): Collection => {
      // Also keeps system namespaces (`system.*`) out of reach.
      if (!/^[a-z_]+$/.test(name))
        throw new Error(`invalid collection name ${JSON.stringify(name)}`);
      const coll = db.collection<Stored>(name);

      return {
        get: (id) => run(() => coll.findOne({ _id: id })).pipe(Effect.map(decodeFound)),

        getMany: (ids) =>
          ids.length === 0
            ? Effect.succeed([])
            : run(() => coll.find({ _id: { $in: [...ids] } }).toArray()).pipe(
                Effect.map((docs) => docs.map(decodeDoc)),
              ),

        insert: (doc) =>
          writeMode.pipe(
            Effect.flatMap((m) =>
              insertOne(
                coll,
                m === "claims"
                  ? { ...encodeFields(doc), _id: doc._id, [REV]: randomUUID() }
                  : { ...encodeFields(doc), _id: doc._id },
              ),
            ),
          ),

        update: (id, set, condition) => {
          // Nothing to write: the document as it is, if the condition holds.
          if (Object.keys(set).length === 0) {
            return run(() => coll.findOne(idFilter(id, condition))).pipe(Effect.map(decodeFound));
          }
          const setDoc = (extra: Document) => ({ $set: { ...encodeFields(set), ...extra } });
          return writeMode.pipe(
            Effect.flatMap((m) =>
              m === "native"
                ? run(() =>
                    coll.findOneAndUpdate(idFilter(id, condition), setDoc({}), {
                      returnDocument: "after",
                    }),
                  ).pipe(Effect.map(decodeFound))
                : guarded(coll, id, condition, Option.none<Doc>(), (filter) =>
                    // FerretDB v1 skips a `$set` whose new object holds the same values under
                    // other keys ({old: 1} → {fresh: 1}); replacing the whole document is applied
                    // faithfully. The claim keeps the document stable between read and replace.
                    run(async () => {
                      const whole = await coll.findOne(filter);
                      if (whole === null) return null;
                      const next = { ...whole, ...encodeFields(set), [REV]: randomUUID() };
                      return coll.findOneAndReplace(filter, next, { returnDocument: "after" });
                    }).pipe(
                      // Matched: Some(the result); not matched: None (go round again).
                      Effect.map((raw) =>
                        raw === null ? Option.none() : Option.some(decodeFound(raw)),
                      ),
                    ),
                  ),
            ),
          );
        },

        remove: (id, condition) =>
          writeMode.pipe(
            Effect.flatMap((m) =>
              m === "native"
                ? run(() => coll.deleteOne(idFilter(id, condition))).pipe(
                    Effect.map((r) => r.deletedCount === 1),
                  )
                : guarded(coll, id, condition, false, (filter) =>
                    run(() => coll.deleteOne(filter)).pipe(
                      Effect.map((r) => (r.deletedCount === 1 ? Option.some(true) : Option.none())),
                    ),
                  ),
            ),
          ),

        // Not claimed on FerretDB: a claimed update racing with it may report a
        // document that this call deleted a moment later.
        removeWhere: (where) =>
          run(() => coll.deleteMany(allOf(where.map(predicateFilter)))).pipe(
            Effect.map((r) => r.deletedCount),
          ),

        find: (query) =>
          query.limit <= 0 // MongoDB reads a limit of 0 as "no limit"
            ? Effect.succeed([])
            : run(() =>
                coll
                  .find(
                    allOf([
                      ...query.where.map(predicateFilter),
                      ...(query.after ? [keysetFilter(query.sort, query.after)] : []),
                    ]),
                    { sort: sortSpec(query.sort), limit: query.limit },
                  )
                  .toArray(),
              ).pipe(Effect.map((docs) => docs.map(decodeDoc))),
      };
    };

    // --- Counters --------------------------------------------------------------

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

    /**
     * FerretDB: a number is taken by inserting its record (unique `_id`), so
     * no two callers get the same one. The counter document is only a hint of
     * where to start; its racy `$max` may lag, which costs extra inserts,
     * never a duplicate. Records older than an hour and more than
     * SEQUENCE_KEEP below the top are pruned: every caller starts at or above
     * a hint written moments ago, far above them.
     */
    const claimSequence = (name: string) =>
      Effect.gen(function* () {
        const readHint = run(() => counters.findOne({ _id: name })).pipe(
          Effect.map((hint) => (hint === null ? 0 : Number(toJson(hint.seq)))),
        );
        let n = (yield* readHint) + 1;
        for (let misses = 1; ; misses++) {
          const record = { _id: sequenceKey(name, n), at: yield* Clock.currentTimeMillis };
          if (yield* insertOne(sequenceClaims, record)) break;
          // Taken by a concurrent caller, or the hint lags: step on, now and then
          // jumping to the hint the winners have raised meanwhile.
          n = misses % 16 === 0 ? Math.max(n, yield* readHint) + 1 : n + 1;
        }
        const taken = n;
        const raise = () =>
          counters.updateOne({ _id: name }, { $max: { seq: taken } }, { upsert: true });
        // The number is ours whatever happens to the hint.
        yield* run(() =>
          raise().catch((e: unknown) => (isDuplicateKey(e) ? raise() : Promise.reject(e))),
        ).pipe(
          Effect.catchAll((e) =>
            Effect.logDebug("datastore: raising a counter hint failed", e.cause),
          ),
        );
        if (taken % SEQUENCE_KEEP === 0) {
          const now = yield* Clock.currentTimeMillis;
          yield* run(() =>
            sequenceClaims.deleteMany({
              _id: { $gte: sequenceKey(name, 0), $lt: sequenceKey(name, taken - SEQUENCE_KEEP) },
              at: { $lt: now - SEQUENCE_KEEP_MS },
            }),
          ).pipe(
            Effect.catchAllCause((cause) =>
              Effect.logDebug("datastore: pruning sequence records failed", cause),
            ),
            Effect.forkIn(scope),
          );
        }
        return taken;
      });

    // --- Start-up --------------------------------------------------------------

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
      collection,
      nextSequence: (name) =>
        writeMode.pipe(
          Effect.flatMap((m) => (m === "native" ? incrementCounter(name) : claimSequence(name))),
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
    return store;
  });

export const MongoStore = {
  /** The store; builds without I/O (so also while the database is down). The client closes on release. */
  layer: (options: MongoStoreOptions): Layer.Layer<DocStore, MongoStoreConfigError> =>
    Layer.scoped(DocStore, make(options)),
};
