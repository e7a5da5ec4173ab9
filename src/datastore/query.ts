/**
 * MongoDB's query semantics over plain JSON documents: predicate matching,
 * the BSON comparison order, sort keys and keyset pagination. The embedded
 * backend answers every `find` with these; tests use them as the reference.
 *
 * MongoDB rules reproduced here:
 * - a dotted path descends into objects; on an array it applies to each
 *   element that is an object (and a numeric segment also indexes it), and a
 *   path ending on an array offers the array and each of its elements;
 * - `eq`/`in` match if any offered value equals (`null` also matches a
 *   missing field), `ne` if none does, `lt`…`gte` only within the operand's
 *   type bracket, `prefix` only strings;
 * - sorting by an array field uses its smallest element ascending and its
 *   largest descending; an empty array sorts before null and missing.
 */
import type { Doc, FindQuery, Json, Predicate, Scalar, Sort } from "./store.js";

/** A value at a path; `undefined` when the field is missing. */
export type Value = Json | undefined;

type JsonObject = { readonly [key: string]: Json };

const isObject = (v: Value): v is JsonObject =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Own fields only: a path segment such as `constructor` must not reach the prototype. */
const field = (o: JsonObject, key: string): Value => (Object.hasOwn(o, key) ? o[key] : undefined);

const isIndex = (segment: string): boolean => /^\d+$/.test(segment);

/**
 * The value at a dotted path, or undefined when missing. Crossing an array
 * of objects collects each element's value into an array (as MongoDB's
 * `$a.b` does); a numeric segment indexes an array.
 */
export const getPath = (doc: Json, path: string): Value => {
  let current: Value = doc;
  for (const segment of path.split(".")) {
    if (isObject(current)) current = field(current, segment);
    else if (Array.isArray(current) && isIndex(segment)) current = current[Number(segment)];
    else if (Array.isArray(current)) {
      const found = current.flatMap((el) => {
        const v = isObject(el) ? field(el, segment) : undefined;
        return v === undefined ? [] : [v];
      });
      current = found.length > 0 ? found : undefined;
    } else return undefined;
  }
  return current;
};

/** Every value a predicate on `segments` is tested against (undefined: missing somewhere). */
const candidates = (value: Value, segments: ReadonlyArray<string>, i: number, out: Value[]) => {
  if (i === segments.length) {
    out.push(value);
    if (Array.isArray(value)) out.push(...value);
    return;
  }
  const segment = segments[i] as string;
  if (isObject(value)) return candidates(field(value, segment), segments, i + 1, out);
  if (!Array.isArray(value)) {
    out.push(undefined);
    return;
  }
  const before = out.length;
  if (isIndex(segment) && Number(segment) < value.length) {
    candidates(value[Number(segment)], segments, i + 1, out);
  }
  for (const el of value) {
    if (isObject(el)) candidates(field(el, segment), segments, i + 1, out);
  }
  if (out.length === before) out.push(undefined);
};

/** MongoDB's canonical type order; missing compares as null. */
const bracket = (v: Value): number => {
  if (v === null || v === undefined) return 0;
  if (typeof v === "number") return 1;
  if (typeof v === "string") return 2;
  if (typeof v === "boolean") return 5;
  return Array.isArray(v) ? 4 : 3;
};

const sign = (n: number): number => (n < 0 ? -1 : n > 0 ? 1 : 0);

/**
 * Code point order, which is UTF-8 byte order (MongoDB's binary collation).
 * JavaScript's `<` compares UTF-16 units, which puts surrogate pairs (code
 * points above U+FFFF) before U+E000–U+FFFF.
 */
export const compareStrings = (a: string, b: string): number => {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x < y ? -1 : 1;
  }
  return sign(a.length - b.length);
};

/**
 * Total order of MongoDB (BSON woCompare): missing/null < numbers < strings
 * < objects < arrays < booleans. Objects compare pair by pair in field
 * order (value type, then field name, then value); arrays element by element.
 */
export const compareValues = (a: Value, b: Value): number => {
  const ba = bracket(a);
  const bb = bracket(b);
  if (ba !== bb) return sign(ba - bb);
  if (typeof a === "number" || typeof a === "boolean") return sign(Number(a) - Number(b));
  if (typeof a === "string") return compareStrings(a, b as string);
  if (Array.isArray(a)) return comparePairs(a.entries(), (b as Json[]).entries(), false);
  if (isObject(a)) return comparePairs(Object.entries(a), Object.entries(b as JsonObject), true);
  return 0; // both null or missing
};

const comparePairs = (
  a: Iterable<[string | number, Json]>,
  b: Iterable<[string | number, Json]>,
  byName: boolean,
): number => {
  const ib = b[Symbol.iterator]();
  for (const [ka, va] of a) {
    const next = ib.next();
    if (next.done) return 1;
    const [kb, vb] = next.value;
    const c =
      sign(bracket(va) - bracket(vb)) ||
      (byName ? compareStrings(String(ka), String(kb)) : 0) ||
      compareValues(va, vb);
    if (c !== 0) return c;
  }
  return ib.next().done ? 0 : -1;
};

const equalsScalar = (v: Value, operand: Scalar): boolean =>
  operand === null ? v === null || v === undefined : v === operand;

const inRange = (v: Value, op: "lt" | "lte" | "gt" | "gte", operand: Scalar): boolean => {
  // Type bracketing: `gt 5` never matches a string; `gte null` matches null and missing.
  if (bracket(v) !== bracket(operand)) return false;
  const c = compareValues(v, operand);
  return op === "lt" ? c < 0 : op === "lte" ? c <= 0 : op === "gt" ? c > 0 : c >= 0;
};

const matchesOne = (doc: Doc, p: Predicate): boolean => {
  const values: Value[] = [];
  candidates(doc, p.path.split("."), 0, values);
  switch (p.op) {
    case "eq":
      return values.some((v) => equalsScalar(v, p.value));
    case "ne":
      return !values.some((v) => equalsScalar(v, p.value));
    case "in":
      return values.some((v) => p.values.some((operand) => equalsScalar(v, operand)));
    case "prefix":
      return values.some((v) => typeof v === "string" && v.startsWith(p.value));
    case "lt":
    case "lte":
    case "gt":
    case "gte": {
      const { op, value } = p;
      return values.some((v) => inRange(v, op, value));
    }
  }
};

/** True when the document satisfies every predicate. */
export const matches = (doc: Doc, predicates: ReadonlyArray<Predicate>): boolean =>
  predicates.every((p) => matchesOne(doc, p));

/** MongoDB gives an empty array the sort key `undefined`, below null. */
const EMPTY_ARRAY: unique symbol = Symbol("empty array");
type SortKey = Value | typeof EMPTY_ARRAY;

/** The value a sort compares: an array's smallest (ascending) or largest (descending) element. */
const sortKey = (value: Value, descending: boolean): SortKey => {
  if (!Array.isArray(value)) return value ?? null;
  if (value.length === 0) return EMPTY_ARRAY;
  return value.reduce((best, v) => {
    const c = compareValues(v, best);
    return (descending ? c > 0 : c < 0) ? v : best;
  });
};

const compareKeys = (a: SortKey, b: SortKey): number => {
  if (a === EMPTY_ARRAY || b === EMPTY_ARRAY) return a === b ? 0 : a === EMPTY_ARRAY ? -1 : 1;
  return compareValues(a, b);
};

const BY_ID: Sort = { path: "_id", descending: false };

/**
 * `find` over an in-memory collection: where → sort (ties by `_id`, same
 * direction) → keyset `after` → limit. `after.value` is the sort field's
 * value in the last document seen (`getPath(doc, sort.path) ?? null`);
 * it is turned into a sort key the same way as the documents'. As in
 * MongoDB, limit 0 means no limit and a negative limit its absolute value.
 */
export const findIn = (docs: Iterable<Doc>, query: FindQuery): Doc[] => {
  const { path, descending } = query.sort ?? BY_ID;
  const direction = descending ? -1 : 1;
  const order = (ka: SortKey, ida: string, kb: SortKey, idb: string): number =>
    direction * (compareKeys(ka, kb) || compareStrings(ida, idb));
  const after: { key: SortKey; id: string } | undefined = query.after && {
    key: sortKey(query.after.value, descending),
    id: query.after.id,
  };
  const keyed: Array<{ doc: Doc; key: SortKey }> = [];
  for (const doc of docs) {
    if (!matches(doc, query.where)) continue;
    const key = sortKey(getPath(doc, path), descending);
    if (after && order(key, doc._id, after.key, after.id) <= 0) continue;
    keyed.push({ doc, key });
  }
  keyed.sort((a, b) => order(a.key, a.doc._id, b.key, b.doc._id));
  const limit = query.limit === 0 ? keyed.length : Math.abs(query.limit);
  return keyed.slice(0, limit).map((k) => k.doc);
};
