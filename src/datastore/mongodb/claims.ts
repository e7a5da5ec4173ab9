/**
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
import { Clock, Duration, Effect, Exit, Option, Schedule, type Scope } from "effect";
import type { Db, Document, Collection as MongoCollection } from "mongodb";
import { type Condition, StoreUnavailable } from "../store.js";
import { type Counter, REV, type Stored, toJson } from "./codec.js";
import { insertOne, isDuplicateKey, run } from "./errors.js";
import { idFilter } from "./filters.js";

/** How conditional writes and counters are made atomic (see the module comment). */
export type WriteMode = "native" | "claims";

/** One record per number taken, `"<name json>:<number, zero-padded>"`. */
const SEQUENCE_CLAIMS = "_sequence_claims";
/** One record per document version being written. */
const WRITE_CLAIMS = "_write_claims";

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

/** One step of a claimed write: its result, or why to go round again. */
type Attempt<A> =
  | { readonly _tag: "Done"; readonly value: A }
  | { readonly _tag: "Busy" }
  | { readonly _tag: "Moved" };

const sequenceKey = (name: string, n: number): string =>
  `${JSON.stringify(name)}:${String(n).padStart(SEQUENCE_WIDTH, "0")}`;

/** The claimed writes and sequences of one database; background pruning runs in `scope`. */
export const makeClaims = (db: Db, counters: MongoCollection<Counter>, scope: Scope.Scope) => {
  const sequenceClaims = db.collection<Stored>(SEQUENCE_CLAIMS);
  const writeClaims = db.collection<Stored>(WRITE_CLAIMS);

  /**
   * Deletes claim records in the background once the database answers again
   * (at most for a lease: by then the claims are stale anyway). Found by
   * test/faults/ferretdb.test.ts: a claim whose release failed in an outage
   * (or whose insert was stored though its answer was lost) blocked every
   * update of its document for the rest of the lease, 30 s after the
   * database was back (the updates waited CLAIM_WAIT_MS, past their
   * deadlines).
   */
  const deleteLater = (filter: Document) =>
    run(() => writeClaims.deleteMany(filter)).pipe(
      Effect.retry(
        Schedule.spaced(Duration.millis(500)).pipe(Schedule.upTo(Duration.millis(CLAIM_LEASE_MS))),
      ),
      Effect.catchAllCause((cause) =>
        Effect.logDebug("datastore: deleting a write claim failed", cause),
      ),
      Effect.forkIn(scope),
      Effect.asVoid,
    );

  /**
   * Takes the claim on version `rev` of a document: keys to release, or
   * undefined when a live writer holds it. A claim left by a writer that
   * died (older than the lease) is stepped over with the next attempt
   * number, so exactly one taker wins each time. An insert that failed (or
   * was interrupted) may have been stored all the same: that record (known
   * by its `owner`) is deleted once the database answers.
   */
  const claimVersion = (coll: string, id: string, rev: string | null) =>
    Effect.gen(function* () {
      const keys: string[] = [];
      const owner = randomUUID();
      for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt++) {
        const key = JSON.stringify([coll, id, rev, attempt]);
        keys.push(key);
        const at = yield* Clock.currentTimeMillis;
        const inserted = yield* insertOne(writeClaims, { _id: key, at, owner }).pipe(
          // Failed or interrupted (the caller's deadline) alike.
          Effect.onError(() => deleteLater({ _id: key, owner })),
        );
        if (inserted) return keys;
        const holder = yield* run(() => writeClaims.findOne({ _id: key }));
        // Gone already (its writer finished: the version moved) or held by a live writer.
        if (holder === null || at - Number(holder.at) < CLAIM_LEASE_MS) return undefined;
      }
      return undefined;
    });

  /**
   * Releases a claim, with the stale ones stepped over for it. Deleting is
   * safe at any time: a late taker of a released claim finds the version
   * moved on. After a write that did not succeed (the database is probably
   * away), and when releasing fails, it is done in the background once the
   * database answers again: the caller does not wait for it.
   */
  const releaseClaim = (keys: ReadonlyArray<string>, exit: Exit.Exit<unknown, unknown>) => {
    const filter = { _id: { $in: [...keys] } };
    return Exit.isSuccess(exit)
      ? run(() => writeClaims.deleteMany(filter)).pipe(
          Effect.catchAllCause(() => deleteLater(filter)),
          Effect.asVoid,
        )
      : deleteLater(filter);
  };

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
          (keys, exit) => (keys === undefined ? Effect.void : releaseClaim(keys, exit)),
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

  /**
   * A number is taken by inserting its record (unique `_id`), so no two
   * callers get the same one. The counter document is only a hint of where
   * to start; its racy `$max` may lag, which costs extra inserts, never a
   * duplicate. Records older than an hour and more than SEQUENCE_KEEP below
   * the top are pruned: every caller starts at or above a hint written
   * moments ago, far above them.
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

  return { guarded, claimSequence };
};

export type Claims = ReturnType<typeof makeClaims>;
