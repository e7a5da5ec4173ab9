/**
 * The storage contract under the DataStore service: a few collections of
 * JSON documents keyed by a string `_id`, with conditional updates, typed
 * predicates and keyset pagination. The domain rules (entities, registry,
 * parameters, versions) are written once on top of it; each backend
 * (MongoDB, embedded) implements only this. Semantics follow MongoDB's, so
 * both backends answer every query the same way.
 */
import { Context, type Effect, type Option } from "effect";
import type { Json } from "../common/json.js";
import { StoreUnavailable } from "../common/store-error.js";

export type { Json };
export type Scalar = null | boolean | number | string;

/** A stored document. `_id` is unique within its collection. */
export interface Doc {
  readonly _id: string;
  readonly [field: string]: Json;
}

/**
 * A typed predicate on a dotted path (`doc.customer.city`). Comparisons follow
 * MongoDB: values compare only within their type bracket (numbers with
 * numbers, strings with strings…); when the field holds an array, a predicate
 * matches if any element does (`ne`: if no element equals); `eq null` also
 * matches a missing field.
 */
export type Predicate =
  | {
      readonly path: string;
      readonly op: "eq" | "ne" | "lt" | "lte" | "gt" | "gte";
      readonly value: Scalar;
    }
  | { readonly path: string; readonly op: "in"; readonly values: ReadonlyArray<Scalar> }
  /** String field starts with `value` (never a regular expression). */
  | { readonly path: string; readonly op: "prefix"; readonly value: string };

/**
 * Sort order of `find`: by `path`, ties by `_id`, both in the same direction.
 * Values order as in MongoDB: missing/null < numbers < strings < objects <
 * arrays < booleans.
 */
export interface Sort {
  readonly path: string;
  readonly descending: boolean;
}

export interface FindQuery {
  /** All must hold. */
  readonly where: ReadonlyArray<Predicate>;
  /** Default: by `_id` ascending. */
  readonly sort?: Sort;
  /** Keyset position: only documents strictly after this (sort value, `_id`) in sort order. */
  readonly after?: { readonly value: Json; readonly id: string };
  readonly limit: number;
}

/** A write happens only if the stored document's `path` equals `value` (optimistic concurrency). */
export interface Condition {
  readonly path: string;
  readonly value: Scalar;
}

export { StoreUnavailable };

export interface Collection {
  readonly get: (id: string) => Effect.Effect<Option.Option<Doc>, StoreUnavailable>;
  /** The documents found, in no particular order. */
  readonly getMany: (
    ids: ReadonlyArray<string>,
  ) => Effect.Effect<ReadonlyArray<Doc>, StoreUnavailable>;
  /** False when a document with this `_id` exists already (nothing written). */
  readonly insert: (doc: Doc) => Effect.Effect<boolean, StoreUnavailable>;
  /**
   * Sets top-level fields of one document (each key replaces that field
   * whole), atomically and only if `condition` holds. Returns the document
   * after the write, or None when it does not exist or the condition failed.
   */
  readonly update: (
    id: string,
    set: Readonly<Record<string, Json>>,
    condition?: Condition,
  ) => Effect.Effect<Option.Option<Doc>, StoreUnavailable>;
  /** Deletes one document if `condition` holds; false when nothing was deleted. */
  readonly remove: (id: string, condition?: Condition) => Effect.Effect<boolean, StoreUnavailable>;
  /** Deletes every document matching all predicates; returns how many. */
  readonly removeWhere: (
    where: ReadonlyArray<Predicate>,
  ) => Effect.Effect<number, StoreUnavailable>;
  readonly find: (query: FindQuery) => Effect.Effect<ReadonlyArray<Doc>, StoreUnavailable>;
}

export interface DocStoreShape {
  /** A collection by name (`[a-z_]+`); created on first use. */
  readonly collection: (name: string) => Collection;
  /** Atomically increments and returns a named counter (first value 1), shared by all mesh instances. */
  readonly nextSequence: (name: string) => Effect.Effect<number, StoreUnavailable>;
  /** Cheap round trip to the backend, bounded in time. */
  readonly ping: Effect.Effect<void, StoreUnavailable>;
  /** Backend name for logs and health: `mongodb` or `embedded`. */
  readonly backend: string;
}

export class DocStore extends Context.Tag("fo/datastore/DocStore")<DocStore, DocStoreShape>() {}

/** `path eq value`, or no predicate at all when the request left the filter empty. */
export const eqIfSet = (path: string, value: string): Predicate[] =>
  value === "" ? [] : [{ path, op: "eq", value }];
