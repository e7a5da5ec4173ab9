/**
 * Filters and sort orders, built from the typed Predicate AST: no caller
 * object ever reaches the server as a filter, and every path is escaped into
 * stored form (see codec.ts), so it can never spell an operator.
 */
import type { Document, Sort as MongoSort } from "mongodb";
import type { Condition, FindQuery, Json, Predicate } from "../store.js";
import { encode, fieldPath } from "./codec.js";

export const allOf = (filters: ReadonlyArray<Document>): Document => {
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
export const predicateFilter = (p: Predicate): Document => {
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
export const idFilter = (id: string, condition: Condition | undefined): Document =>
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
export const keysetFilter = (
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

export const sortSpec = (sort: FindQuery["sort"]): MongoSort => {
  if (sort === undefined) return [["_id", 1]];
  const direction = sort.descending ? -1 : 1;
  return sort.path === "_id"
    ? [["_id", direction]]
    : [
        [fieldPath(sort.path), direction],
        ["_id", direction],
      ];
};
