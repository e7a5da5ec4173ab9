/**
 * The DocStore contract, run unchanged against every backend (embedded,
 * MongoDB): both must answer every query the same way, and that way is
 * MongoDB's. Each test works in collections and counters of its own
 * (random names), so several runs can share one database.
 */
import { expect, layer } from "@effect/vitest";
import { Effect, type Layer, Option } from "effect";
import {
  type Collection,
  type Doc,
  DocStore,
  type FindQuery,
  type Json,
  type Predicate,
  type Scalar,
  type Sort,
} from "../../src/datastore/store.js";

/** Collection names are `[a-z_]+`: a random suffix of letters. */
const unique = (label: string): string => {
  const letters = Array.from({ length: 12 }, () => 97 + Math.floor(Math.random() * 26));
  return `${label}_${String.fromCharCode(...letters)}`;
};

/** A fresh collection holding `docs`. */
const seeded = (docs: ReadonlyArray<Doc>) =>
  Effect.gen(function* () {
    const store = yield* DocStore;
    const c = store.collection(unique("conf"));
    for (const doc of docs) expect(yield* c.insert(doc)).toBe(true);
    return c;
  });

const ids = (docs: ReadonlyArray<Doc>): string[] => docs.map((d) => d._id);

const findIds = (c: Collection, where: ReadonlyArray<Predicate>, sort?: Sort) =>
  c.find({ where, sort, limit: 1000 }).pipe(Effect.map(ids));

/** The field at a dotted path of plain objects (what a caller passes as `after.value`). */
const valueAt = (doc: Doc, path: string): Json => {
  let v: Json | undefined = doc;
  for (const key of path.split(".")) {
    v = typeof v === "object" && v !== null && !Array.isArray(v) ? v[key] : undefined;
  }
  return v ?? null;
};

/** Walks every page of a query with keyset `after`; returns the ids in the order seen. */
const allPages = (c: Collection, query: Omit<FindQuery, "after">) =>
  Effect.gen(function* () {
    const seen: string[] = [];
    let after: FindQuery["after"];
    for (let page = 0; page < 1000; page++) {
      const docs = yield* c.find({ ...query, after });
      seen.push(...ids(docs));
      const last = docs.at(-1);
      if (last === undefined || docs.length < query.limit) break;
      after = { value: valueAt(last, query.sort?.path ?? "_id"), id: last._id };
    }
    return seen;
  });

const eq = (path: string, value: Scalar): Predicate => ({ path, op: "eq", value });

/** One field of many types (`n`), strings (`s`), arrays and nested objects. */
const mixed: ReadonlyArray<Doc> = [
  { _id: "a", n: 1, s: "apple", tags: ["x", "y"], nested: { city: "Oslo", zip: 100 } },
  { _id: "b", n: 5, s: "apricot", tags: ["y"], nested: { city: "Bergen" } },
  { _id: "c", n: 10, s: "banana", tags: [], nested: { city: "Oslo" } },
  { _id: "d", n: "7", s: 42, tags: "x" },
  { _id: "e", n: null, s: null },
  { _id: "f" },
  { _id: "g", n: [3, 12], s: ["avocado", "cherry"], nested: [{ city: "Oslo" }, { city: "Rome" }] },
  { _id: "h", n: true, s: "Apple" },
  { _id: "i", n: 2.5, s: "a.b*c" },
];

/** Sort field `v` of every type; expected ascending order (ties by `_id`). */
const sortable: ReadonlyArray<Doc> = [
  { _id: "b1", v: true },
  { _id: "s1", v: "b" },
  { _id: "m1" },
  { _id: "i3", v: 2 },
  { _id: "o1", v: { a: 1 } },
  { _id: "s5", v: "😀" },
  { _id: "n1", v: null },
  { _id: "i2", v: -1.5 },
  { _id: "s2", v: "B" },
  { _id: "o3", v: {} },
  { _id: "b2", v: false },
  { _id: "s3", v: "10" },
  { _id: "i1", v: 2 },
  { _id: "o2", v: { a: 0, b: 1 } },
  { _id: "s4", v: "～" },
];
const sortedAscending = [
  ...["m1", "n1"], // missing and null are equal: by _id
  ...["i2", "i1", "i3"],
  ...["s3", "s2", "s1", "s4", "s5"], // binary (code point) order: "～" U+FF5E < "😀" U+1F600
  ...["o3", "o2", "o1"], // field by field: {} < {a: 0, …} < {a: 1}
  ...["b2", "b1"],
];

/** Sort field `meta.v` with missing values, mixed types and ties, ids shuffled against values. */
const paged: ReadonlyArray<Doc> = (() => {
  const values: Array<Json | undefined> = [
    undefined,
    null,
    3,
    1,
    1,
    2.5,
    "a",
    "a",
    "B",
    { k: 1 },
    { k: 1 },
    { j: 2 },
    true,
    false,
    false,
    -7,
    undefined,
    "zz",
    0,
    null,
    1,
    "é",
    true,
  ];
  return values.map((v, i): Doc => {
    const _id = `p${String((i * 7) % values.length).padStart(2, "0")}`;
    if (v !== undefined) return { _id, meta: { v } };
    return i % 2 === 0 ? { _id } : { _id, meta: {} };
  });
})();

export const docStoreConformance = (
  name: string,
  makeLayer: () => Layer.Layer<DocStore, unknown>,
) =>
  layer(makeLayer(), { excludeTestServices: true, timeout: "60 seconds" })(
    `DocStore conformance: ${name}`,
    (it) => {
      it.effect("ping succeeds and the backend names itself", () =>
        Effect.gen(function* () {
          const store = yield* DocStore;
          yield* store.ping;
          expect(["mongodb", "embedded"]).toContain(store.backend);
        }),
      );

      it.effect("insert, get, and a duplicate insert writes nothing", () =>
        Effect.gen(function* () {
          const doc: Doc = { _id: "k1", name: "one", nested: { list: [1, "two", null], ok: true } };
          const c = yield* seeded([doc]);
          expect(yield* c.get("k1")).toEqual(Option.some(doc));
          expect(yield* c.get("missing")).toEqual(Option.none());
          expect(yield* c.insert({ _id: "k1", name: "other" })).toBe(false);
          expect(yield* c.get("k1")).toEqual(Option.some(doc));
        }),
      );

      it.effect("getMany returns the documents found", () =>
        Effect.gen(function* () {
          const c = yield* seeded([
            { _id: "x", n: 1 },
            { _id: "y", n: 2 },
            { _id: "z", n: 3 },
          ]);
          const found = yield* c.getMany(["z", "missing", "x", "x"]);
          expect([...found].sort((a, b) => a._id.localeCompare(b._id))).toEqual([
            { _id: "x", n: 1 },
            { _id: "z", n: 3 },
          ]);
          expect(yield* c.getMany([])).toEqual([]);
        }),
      );

      it.effect("update replaces the named top-level fields whole", () =>
        Effect.gen(function* () {
          const c = yield* seeded([{ _id: "u", a: { x: 1, y: 2 }, b: 1 }]);
          const after = yield* c.update("u", { a: { x: 9 }, c: ["new"] });
          const expected = { _id: "u", a: { x: 9 }, b: 1, c: ["new"] };
          expect(after).toEqual(Option.some(expected));
          expect(yield* c.get("u")).toEqual(Option.some(expected));
          expect(yield* c.update("missing", { a: 1 })).toEqual(Option.none());
          expect(yield* c.get("missing")).toEqual(Option.none()); // no upsert
        }),
      );

      it.effect("update with a condition writes only when it holds", () =>
        Effect.gen(function* () {
          const doc: Doc = { _id: "u", version: 3, meta: { etag: "e1" } };
          const c = yield* seeded([doc]);
          const stale = yield* c.update("u", { version: 4 }, { path: "version", value: 2 });
          expect(stale).toEqual(Option.none());
          expect(yield* c.get("u")).toEqual(Option.some(doc));
          const ok = yield* c.update("u", { version: 4 }, { path: "meta.etag", value: "e1" });
          expect(ok).toEqual(Option.some({ ...doc, version: 4 }));
          // MongoDB equality: null also matches a missing field.
          const onMissing = yield* c.update("u", { extra: 1 }, { path: "absent", value: null });
          expect(Option.map(onMissing, (d) => d.extra)).toEqual(Option.some(1));
          expect(yield* c.update("nope", { a: 1 }, { path: "a", value: null })).toEqual(
            Option.none(),
          );
        }),
      );

      it.effect("remove, with and without a condition", () =>
        Effect.gen(function* () {
          const c = yield* seeded([{ _id: "r1", state: "open" }, { _id: "r2" }]);
          expect(yield* c.remove("r1", { path: "state", value: "closed" })).toBe(false);
          expect(Option.isSome(yield* c.get("r1"))).toBe(true);
          expect(yield* c.remove("r1", { path: "state", value: "open" })).toBe(true);
          expect(yield* c.get("r1")).toEqual(Option.none());
          expect(yield* c.remove("r1")).toBe(false);
          expect(yield* c.remove("r2")).toBe(true);
          expect(yield* findIds(c, [])).toEqual([]);
        }),
      );

      it.effect("removeWhere deletes every match and counts them", () =>
        Effect.gen(function* () {
          const c = yield* seeded(mixed);
          expect(yield* c.removeWhere([eq("nested.city", "Oslo")])).toBe(3);
          expect(yield* findIds(c, [])).toEqual(["b", "d", "e", "f", "h", "i"]);
          expect(yield* c.removeWhere([eq("nested.city", "Oslo")])).toBe(0);
          expect(yield* c.removeWhere([])).toBe(6);
          expect(yield* findIds(c, [])).toEqual([]);
        }),
      );

      it.effect("eq and ne: arrays match by element, null matches missing", () =>
        Effect.gen(function* () {
          const c = yield* seeded(mixed);
          const q = (where: Predicate) => findIds(c, [where]);
          expect(yield* q(eq("n", 5))).toEqual(["b"]);
          expect(yield* q(eq("n", 2.5))).toEqual(["i"]);
          expect(yield* q(eq("n", "7"))).toEqual(["d"]);
          expect(yield* q(eq("n", 1))).toEqual(["a"]); // not `true`
          expect(yield* q(eq("n", true))).toEqual(["h"]);
          expect(yield* q(eq("n", 12))).toEqual(["g"]);
          expect(yield* q(eq("n", null))).toEqual(["e", "f"]);
          expect(yield* q(eq("tags", "x"))).toEqual(["a", "d"]);
          expect(yield* q({ path: "n", op: "ne", value: 5 })).toEqual([
            "a",
            "c",
            "d",
            "e",
            "f",
            "g",
            "h",
            "i",
          ]);
          expect(yield* q({ path: "n", op: "ne", value: 3 })).toEqual([
            "a",
            "b",
            "c",
            "d",
            "e",
            "f",
            "h",
            "i",
          ]);
          expect(yield* q({ path: "n", op: "ne", value: null })).toEqual([
            "a",
            "b",
            "c",
            "d",
            "g",
            "h",
            "i",
          ]);
        }),
      );

      it.effect("lt/lte/gt/gte compare only within the operand's type bracket", () =>
        Effect.gen(function* () {
          const c = yield* seeded(mixed);
          const q = (op: "lt" | "lte" | "gt" | "gte", path: string, value: Scalar) =>
            findIds(c, [{ path, op, value }]);
          expect(yield* q("gt", "n", 5)).toEqual(["c", "g"]); // not "7", not true
          expect(yield* q("gte", "n", 5)).toEqual(["b", "c", "g"]);
          expect(yield* q("lt", "n", 5)).toEqual(["a", "g", "i"]);
          expect(yield* q("lte", "n", 1)).toEqual(["a"]);
          expect(yield* q("lt", "n", "8")).toEqual(["d"]);
          expect(yield* q("gt", "n", false)).toEqual(["h"]);
          expect(yield* q("gte", "n", null)).toEqual(["e", "f"]);
          expect(yield* q("lt", "n", null)).toEqual([]);
          expect(yield* q("gt", "s", "b")).toEqual(["c", "g"]);
          expect(yield* q("lt", "s", "B")).toEqual(["h"]); // binary order: "A" < "B" < "a"
        }),
      );

      it.effect("in and prefix", () =>
        Effect.gen(function* () {
          const c = yield* seeded(mixed);
          const inQ = (values: ReadonlyArray<Scalar>) =>
            findIds(c, [{ path: "n", op: "in", values }]);
          expect(yield* inQ([1, "7", null])).toEqual(["a", "d", "e", "f"]);
          expect(yield* inQ([12, false])).toEqual(["g"]);
          expect(yield* inQ([])).toEqual([]);
          const prefix = (path: string, value: string) =>
            findIds(c, [{ path, op: "prefix", value }]);
          expect(yield* prefix("s", "ap")).toEqual(["a", "b"]); // case-sensitive
          expect(yield* prefix("s", "av")).toEqual(["g"]);
          expect(yield* prefix("s", "a.")).toEqual(["i"]); // a plain string, not a regex
          expect(yield* prefix("s", "a.b*")).toEqual(["i"]);
          expect(yield* prefix("s", "")).toEqual(["a", "b", "c", "g", "h", "i"]);
          expect(yield* prefix("n", "7")).toEqual(["d"]);
          expect(yield* prefix("tags", "x")).toEqual(["a", "d"]);
        }),
      );

      it.effect("dotted paths reach nested objects and objects in arrays", () =>
        Effect.gen(function* () {
          const c = yield* seeded(mixed);
          expect(yield* findIds(c, [eq("nested.city", "Oslo")])).toEqual(["a", "c", "g"]);
          expect(yield* findIds(c, [eq("nested.city", "Rome")])).toEqual(["g"]);
          expect(yield* findIds(c, [eq("nested.zip", 100)])).toEqual(["a"]);
          expect(yield* findIds(c, [eq("nested.zip", null)])).toEqual([
            "b",
            "c",
            "d",
            "e",
            "f",
            "g",
            "h",
            "i",
          ]);
          expect(yield* findIds(c, [{ path: "nested.zip", op: "gt", value: 50 }])).toEqual(["a"]);
          expect(yield* findIds(c, [{ path: "nested.city", op: "ne", value: "Oslo" }])).toEqual([
            "b",
            "d",
            "e",
            "f",
            "h",
            "i",
          ]);
        }),
      );

      it.effect("predicates combine with AND, each matched on its own", () =>
        Effect.gen(function* () {
          const c = yield* seeded(mixed);
          const where: Predicate[] = [
            { path: "n", op: "gte", value: 1 },
            { path: "n", op: "lt", value: 10 },
            eq("nested.city", "Oslo"),
          ];
          expect(yield* findIds(c, where)).toEqual(["a", "g"]);
          expect(yield* findIds(c, [])).toEqual(ids(mixed)); // default: by _id
        }),
      );

      it.effect(
        "sort by a mixed-type field: null/missing < numbers < strings < objects < booleans",
        () =>
          Effect.gen(function* () {
            const c = yield* seeded(sortable);
            const asc = yield* findIds(c, [], { path: "v", descending: false });
            expect(asc).toEqual(sortedAscending);
            // Ties by _id descending too: the exact reverse.
            const desc = yield* findIds(c, [], { path: "v", descending: true });
            expect(desc).toEqual([...sortedAscending].reverse());
          }),
      );

      it.effect("sort by an array field: smallest element ascending, largest descending", () =>
        Effect.gen(function* () {
          const c = yield* seeded([
            { _id: "a", v: [1, 10] },
            { _id: "b", v: 5 },
            { _id: "c", v: [] },
            { _id: "d" },
            { _id: "e", v: ["x", 3] },
            { _id: "f", v: "m" },
          ]);
          // An empty array sorts below null and missing: first ascending, last descending.
          expect(yield* findIds(c, [], { path: "v", descending: false })).toEqual([
            "c",
            "d",
            "a",
            "e",
            "b",
            "f",
          ]);
          expect(yield* findIds(c, [], { path: "v", descending: true })).toEqual([
            "e",
            "f",
            "a",
            "b",
            "d",
            "c",
          ]);
        }),
      );

      it.effect("limit applies after sort", () =>
        Effect.gen(function* () {
          const c = yield* seeded(sortable);
          const docs = yield* c.find({
            where: [],
            sort: { path: "v", descending: true },
            limit: 3,
          });
          expect(ids(docs)).toEqual(["b1", "b2", "o1"]);
          expect(ids(yield* c.find({ where: [], limit: 2 }))).toEqual(["b1", "b2"]);
        }),
      );

      it.effect("keyset pages give every document once: missing, mixed and tied values", () =>
        Effect.gen(function* () {
          const c = yield* seeded(paged);
          for (const descending of [false, true]) {
            const sort = { path: "meta.v", descending };
            const full = yield* findIds(c, [], sort);
            expect(new Set(full).size).toBe(paged.length);
            for (const limit of [1, 4, 7]) {
              expect(yield* allPages(c, { where: [], sort, limit })).toEqual(full);
            }
            const where: Predicate[] = [{ path: "meta.v", op: "ne", value: false }];
            const some = yield* findIds(c, where, sort);
            expect(some).toHaveLength(paged.length - 2);
            expect(yield* allPages(c, { where, sort, limit: 3 })).toEqual(some);
          }
        }),
      );

      it.effect("keyset pages by the default _id order", () =>
        Effect.gen(function* () {
          const c = yield* seeded(paged);
          const all = [...ids(paged)].sort();
          expect(yield* allPages(c, { where: [], limit: 5 })).toEqual(all);
        }),
      );

      it.effect("nextSequence counts from 1, per name", () =>
        Effect.gen(function* () {
          const store = yield* DocStore;
          const [first, second] = [unique("seq"), unique("seq")];
          expect(yield* store.nextSequence(first)).toBe(1);
          expect(yield* store.nextSequence(first)).toBe(2);
          expect(yield* store.nextSequence(second)).toBe(1);
          expect(yield* store.nextSequence(first)).toBe(3);
          const many = yield* Effect.all(
            Array.from({ length: 20 }, () => store.nextSequence(second)),
            { concurrency: "unbounded" },
          );
          expect([...many].sort((a, b) => a - b)).toEqual(
            Array.from({ length: 20 }, (_, i) => i + 2),
          );
        }),
      );

      it.effect("20 concurrent conditional updates: exactly one wins", () =>
        Effect.gen(function* () {
          const c = yield* seeded([{ _id: "x", version: 0, by: null }]);
          const results = yield* Effect.all(
            Array.from({ length: 20 }, (_, i) =>
              c.update("x", { version: 1, by: i }, { path: "version", value: 0 }),
            ),
            { concurrency: "unbounded" },
          );
          const winners = results.filter(Option.isSome).map((o) => o.value);
          expect(winners).toHaveLength(1);
          expect(yield* c.get("x")).toEqual(Option.some(winners[0]));
        }),
      );

      it.effect("20 concurrent inserts of one _id: exactly one succeeds", () =>
        Effect.gen(function* () {
          const c = yield* seeded([]);
          const results = yield* Effect.all(
            Array.from({ length: 20 }, (_, i) => c.insert({ _id: "same", i })),
            { concurrency: "unbounded" },
          );
          expect(results.filter((ok) => ok)).toHaveLength(1);
          expect(yield* c.getMany(["same"])).toHaveLength(1);
        }),
      );
    },
  );
