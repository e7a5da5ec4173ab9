/** The store's collections: reads, and writes made atomic natively (MongoDB) or by claims (FerretDB). */
import { randomUUID } from "node:crypto";
import { Effect, Option } from "effect";
import type { Db, Document } from "mongodb";
import type { Collection, Doc, StoreUnavailable } from "../store.js";
import type { Claims, WriteMode } from "./claims.js";
import { decodeDoc, decodeFound, encodeFields, REV, type Stored } from "./codec.js";
import { insertOne, run } from "./errors.js";
import { allOf, idFilter, keysetFilter, predicateFilter, sortSpec } from "./filters.js";

/** `DocStoreShape.collection`: writes go the way `writeMode` says, decided once per store. */
export const makeCollection =
  (db: Db, writeMode: Effect.Effect<WriteMode, StoreUnavailable>, { guarded }: Claims) =>
  (name: string): Collection => {
    // Also keeps system namespaces (`system.*`) out of reach.
    if (!/^[a-z_]+$/.test(name)) throw new Error(`invalid collection name ${JSON.stringify(name)}`);
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
