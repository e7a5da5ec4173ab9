/**
 * The DataStore port's contract (issue #3), run unchanged against every
 * storage backend (embedded, MongoDB/FerretDB): every RPC, every error code,
 * pagination across pages, semver ordering, scope resolution, lifecycle
 * transitions, leases and the watch streams. Every test works on kinds, ids,
 * keys and service types of its own (random suffixes), so several runs can
 * share one database. Tests run on the real clock (leases, watch polling).
 */
import { randomBytes } from "node:crypto";
import {
  fromJson,
  type JsonObject,
  type JsonValue,
  type MessageInitShape,
  toJson,
} from "@bufbuild/protobuf";
import {
  durationFromMs,
  type Timestamp,
  timestampMs,
  type Value,
  ValueSchema,
} from "@bufbuild/protobuf/wkt";
import { describe, expect, layer, type Vitest } from "@effect/vitest";
import { Effect, Either, type Layer, Option, Stream } from "effect";
import {
  DataStoreService,
  WatchParametersResponse_Type as ParamEvent,
} from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { FieldFilter_Operator as Op } from "../../gen/floworchestrator/datastore/v1/entity_pb.js";
import {
  ParameterDataType as DataType,
  ParameterScope as Scope,
} from "../../gen/floworchestrator/datastore/v1/parameter_pb.js";
import {
  ServiceHealth as Health,
  ServiceEvent_Type as ServiceEvent,
  ServiceStatus as Status,
} from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
import { VersionStatus } from "../../gen/floworchestrator/datastore/v1/version_pb.js";
import type { MeshError } from "../../src/common/errors.js";
import { DataStore } from "../../src/datastore/DataStore.js";
import type { DocStore } from "../../src/datastore/store.js";
import { dataStoreLayer } from "../support/datastore.js";
import { failure, invalid, portCaller, watching } from "../support/port.js";

// --- Calling the port ------------------------------------------------------------

type Methods = typeof DataStoreService.method;

type Request<K extends keyof Methods> = MessageInitShape<Methods[K]["input"]>;

const { call, open } = portCaller(DataStoreService, DataStore);

/** A FailedPrecondition or InvalidArgument carrying a FlowOrchestrator code. */
const withCode = <A, R>(
  effect: Effect.Effect<A, MeshError, R>,
  tag: "InvalidArgument" | "FailedPrecondition",
  code: string,
) => failure(effect, tag).pipe(Effect.tap((e) => expect(e.code).toBe(code)));

// --- Test data ------------------------------------------------------------------

/** A random lowercase suffix: valid in kinds, ids, keys and type names. */
const unique = (prefix: string): string => `${prefix}${randomBytes(5).toString("hex")}`;

const val = (json: JsonValue): Value => fromJson(ValueSchema, json);
const jsonOf = (value: Value | undefined): JsonValue | undefined =>
  value === undefined ? undefined : toJson(ValueSchema, value);

/** A typed predicate (`values` for IN). */
const filter = (field: string, operator: Op, value: JsonValue) =>
  operator === Op.IN && Array.isArray(value)
    ? { field, operator, values: value.map(val) }
    : { field, operator, value: val(value) };

/** A timestamp in epoch milliseconds; NaN when unset (so comparisons fail). */
const msOf = (t: Timestamp | undefined): number => (t === undefined ? Number.NaN : timestampMs(t));

/** Follows `next_page_token` to the end; every page's items in order, and the page count. */
const allPages = <A, E, R>(
  page: (pageToken: string) => Effect.Effect<{ items: ReadonlyArray<A>; next: string }, E, R>,
) =>
  Effect.gen(function* () {
    const items: A[] = [];
    let token = "";
    for (let pages = 1; pages <= 100; pages++) {
      const { items: batch, next } = yield* page(token);
      items.push(...batch);
      if (next === "") return { items, pages };
      token = next;
    }
    return yield* Effect.die(new Error("more than 100 pages: the token never ends"));
  });

type It = Vitest.MethodsNonLive<DataStore, true>;

// --- Entities ---------------------------------------------------------------------

const entityTests = (it: It) =>
  describe("entities", () => {
    it.effect("create without an id generates a UUID; the entity starts at version 1", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        const { entity } = yield* call("createEntity", {
          kind,
          document: { name: "a", n: 1 },
          labels: { env: "test" },
        });
        expect(entity?.id).toMatch(
          /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
        );
        expect(entity).toMatchObject({
          kind,
          document: { name: "a", n: 1 },
          labels: { env: "test" },
          version: 1n,
        });
        expect(entity?.createTime).toEqual(entity?.updateTime);
        const other = yield* call("createEntity", { kind, document: { name: "a", n: 1 } });
        expect(other.entity?.id).not.toBe(entity?.id);
      }),
    );

    it.effect("create with a client id is idempotent; a different body is AlreadyExists", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        const first = yield* call("createEntity", {
          kind,
          id: "order-1",
          document: { a: 1, b: { c: [1, 2] } },
          labels: { x: "1" },
        });
        expect(first.entity?.id).toBe("order-1");
        // Key order does not make a different body.
        const retry = yield* call("createEntity", {
          kind,
          id: "order-1",
          document: { b: { c: [1, 2] }, a: 1 },
          labels: { x: "1" },
        });
        expect(retry.entity).toEqual(first.entity);
        yield* failure(
          call("createEntity", { kind, id: "order-1", document: { a: 2, b: { c: [1, 2] } } }),
          "AlreadyExists",
        );
        yield* failure(
          call("createEntity", {
            kind,
            id: "order-1",
            document: { a: 1, b: { c: [1, 2] } },
            labels: { x: "2" },
          }),
          "AlreadyExists",
        );
        // The same id in another kind is another entity.
        const elsewhere = yield* call("createEntity", {
          kind: unique("k"),
          id: "order-1",
          document: {},
        });
        expect(elsewhere.entity?.version).toBe(1n);
      }),
    );

    it.effect("get returns the stored entity; NotFound when absent", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        const { entity } = yield* call("createEntity", {
          kind,
          id: "e1",
          document: { deep: { list: [1, "two", null, true, { x: 1.5 }] } },
        });
        const got = yield* call("getEntity", { kind, id: "e1" });
        expect(got.entity).toEqual(entity);
        yield* failure(call("getEntity", { kind, id: "nope" }), "NotFound");
        yield* failure(call("getEntity", { kind: unique("k"), id: "e1" }), "NotFound");
      }),
    );

    it.effect("update without a mask replaces document and labels, version +1", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        const { entity } = yield* call("createEntity", {
          kind,
          id: "e1",
          document: { a: 1, b: 2 },
          labels: { old: "yes" },
        });
        const { entity: updated } = yield* call("updateEntity", {
          kind,
          id: "e1",
          document: { c: 3 },
          labels: { fresh: "yes" },
        });
        expect(updated).toMatchObject({
          document: { c: 3 },
          labels: { fresh: "yes" },
          version: 2n,
        });
        expect(updated?.createTime).toEqual(entity?.createTime);
        expect((yield* call("getEntity", { kind, id: "e1" })).entity).toEqual(updated);
        // Same values under other keys is still a different document.
        const renamed = yield* call("updateEntity", {
          kind,
          id: "e1",
          document: { d: 3 },
          labels: { other: "yes" },
        });
        expect(renamed.entity).toMatchObject({ document: { d: 3 }, labels: { other: "yes" } });
        expect((yield* call("getEntity", { kind, id: "e1" })).entity).toEqual(renamed.entity);
        yield* failure(call("updateEntity", { kind, id: "nope", document: {} }), "NotFound");
      }),
    );

    it.effect("update with a field mask sets, adds and removes single fields, or only labels", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        yield* call("createEntity", {
          kind,
          id: "e1",
          document: { a: { b: 1, c: 2 }, d: 1 },
          labels: { keep: "me" },
        });
        const set = yield* call("updateEntity", {
          kind,
          id: "e1",
          document: { a: { b: 5, ignored: true }, x: { y: true }, d: 99 },
          updateMask: { paths: ["document.a.b", "document.x.y"] },
        });
        expect(set.entity).toMatchObject({
          document: { a: { b: 5, c: 2 }, d: 1, x: { y: true } },
          labels: { keep: "me" },
          version: 2n,
        });
        // A masked field absent from `document` is removed.
        const removed = yield* call("updateEntity", {
          kind,
          id: "e1",
          document: {},
          updateMask: { paths: ["document.a.c", "document.d"] },
        });
        expect(removed.entity?.document).toEqual({ a: { b: 5 }, x: { y: true } });
        const labels = yield* call("updateEntity", {
          kind,
          id: "e1",
          labels: { fresh: "label" },
          updateMask: { paths: ["labels"] },
        });
        expect(labels.entity).toMatchObject({
          document: { a: { b: 5 }, x: { y: true } },
          labels: { fresh: "label" },
          version: 4n,
        });
        yield* invalid(
          call("updateEntity", {
            kind,
            id: "e1",
            document: {},
            updateMask: { paths: ["version"] },
          }),
          "update_mask.paths[0]",
        );
      }),
    );

    it.effect("update with expected_version writes only at that version, else Aborted", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        yield* call("createEntity", { kind, id: "e1", document: { n: 0 } });
        const ok = yield* call("updateEntity", {
          kind,
          id: "e1",
          document: { n: 1 },
          expectedVersion: 1n,
        });
        expect(ok.entity?.version).toBe(2n);
        const stale = yield* failure(
          call("updateEntity", { kind, id: "e1", document: { n: 2 }, expectedVersion: 1n }),
          "Aborted",
        );
        expect(stale.message).toMatch(/version/);
        const got = yield* call("getEntity", { kind, id: "e1" });
        expect(got.entity).toMatchObject({ document: { n: 1 }, version: 2n });
      }),
    );

    it.effect("concurrent updates without expected_version all land, no field lost", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        yield* call("createEntity", { kind, id: "e1", document: {} });
        const writers = ["a", "b", "c", "d", "e"];
        yield* Effect.all(
          writers.map((field) =>
            call("updateEntity", {
              kind,
              id: "e1",
              document: { [field]: true },
              updateMask: { paths: [`document.${field}`] },
            }),
          ),
          { concurrency: "unbounded" },
        );
        const { entity } = yield* call("getEntity", { kind, id: "e1" });
        expect(entity).toMatchObject({
          document: { a: true, b: true, c: true, d: true, e: true },
          version: 6n,
        });
      }),
    );

    it.effect(
      "50 concurrent updates with the same expected_version: exactly one wins, 49 Aborted",
      () =>
        Effect.gen(function* () {
          const kind = unique("k");
          const { entity } = yield* call("createEntity", { kind, id: "race", document: { w: -1 } });
          const start = entity?.version ?? 0n;
          const results = yield* Effect.all(
            Array.from({ length: 50 }, (_, w) =>
              Effect.either(
                call("updateEntity", { kind, id: "race", document: { w }, expectedVersion: start }),
              ),
            ),
            { concurrency: "unbounded" },
          );
          const winners = results.filter(Either.isRight);
          const losers = results.filter(Either.isLeft);
          expect(winners).toHaveLength(1);
          expect(losers.map((l) => l.left._tag)).toEqual(Array(49).fill("Aborted"));
          const final = yield* call("getEntity", { kind, id: "race" });
          expect(final.entity?.version).toBe(start + 1n);
          expect(final.entity?.document).toEqual(winners[0]?.right.entity?.document);
        }),
      30_000,
    );

    it.effect("delete with a matching or no expected version; Aborted and NotFound otherwise", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        yield* call("createEntity", { kind, id: "e1", document: {} });
        yield* call("updateEntity", { kind, id: "e1", document: { n: 1 } });
        yield* failure(call("deleteEntity", { kind, id: "e1", expectedVersion: 1n }), "Aborted");
        yield* call("getEntity", { kind, id: "e1" }); // still there
        yield* call("deleteEntity", { kind, id: "e1", expectedVersion: 2n });
        yield* failure(call("getEntity", { kind, id: "e1" }), "NotFound");
        yield* failure(call("deleteEntity", { kind, id: "e1" }), "NotFound");
        yield* failure(call("deleteEntity", { kind, id: "e1", expectedVersion: 2n }), "NotFound");

        yield* call("createEntity", { kind, id: "e2", document: {} });
        yield* call("deleteEntity", { kind, id: "e2" });
        yield* failure(call("getEntity", { kind, id: "e2" }), "NotFound");
        // The id is free again, starting over at version 1.
        const again = yield* call("createEntity", { kind, id: "e2", document: { new: true } });
        expect(again.entity?.version).toBe(1n);
      }),
    );

    it.effect("list by label selector: every selected label must match", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        const app = "app.kubernetes.io/name";
        const labels: Record<string, Record<string, string>> = {
          a: { color: "red", size: "s", [app]: "shop" },
          b: { color: "red", size: "m" },
          c: { color: "blue", size: "s", [app]: "shop" },
          d: {},
        };
        for (const [id, l] of Object.entries(labels)) {
          yield* call("createEntity", { kind, id, document: {}, labels: l });
        }
        const ids = (labelSelector: Record<string, string>) =>
          call("listEntities", { kind, labelSelector }).pipe(
            Effect.map((r) => r.entities.map((e) => e.id)),
          );
        expect(yield* ids({})).toEqual(["a", "b", "c", "d"]);
        expect(yield* ids({ color: "red" })).toEqual(["a", "b"]);
        expect(yield* ids({ color: "red", size: "s" })).toEqual(["a"]);
        expect(yield* ids({ [app]: "shop" })).toEqual(["a", "c"]);
        expect(yield* ids({ color: "green" })).toEqual([]);
        // Another kind's entities never show up.
        expect(
          (yield* call("listEntities", { kind: unique("k"), labelSelector: { color: "red" } }))
            .entities,
        ).toEqual([]);
      }),
    );

    it.effect("list by typed filters: eq, ne, ranges, in, nested paths, combined", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        for (let n = 1; n <= 7; n++) {
          yield* call("createEntity", {
            kind,
            id: `e${n}`,
            document: {
              n,
              name: `item-${n}`,
              meta: { group: n % 2 === 0 ? "even" : "odd", score: n * 1.5 },
              ...(n === 7 ? { extra: true } : {}),
            },
          });
        }
        const ids = (...filters: ReturnType<typeof filter>[]) =>
          call("listEntities", { kind, filters }).pipe(
            Effect.map((r) => r.entities.map((e) => e.id)),
          );
        expect(yield* ids(filter("n", Op.EQUAL, 3))).toEqual(["e3"]);
        expect(yield* ids(filter("name", Op.EQUAL, "item-4"))).toEqual(["e4"]);
        expect(yield* ids(filter("n", Op.NOT_EQUAL, 3))).toEqual([
          "e1",
          "e2",
          "e4",
          "e5",
          "e6",
          "e7",
        ]);
        expect(yield* ids(filter("n", Op.LESS_THAN, 3))).toEqual(["e1", "e2"]);
        expect(yield* ids(filter("n", Op.LESS_THAN_OR_EQUAL, 3))).toEqual(["e1", "e2", "e3"]);
        expect(yield* ids(filter("n", Op.GREATER_THAN, 5))).toEqual(["e6", "e7"]);
        expect(yield* ids(filter("n", Op.GREATER_THAN_OR_EQUAL, 5))).toEqual(["e5", "e6", "e7"]);
        expect(yield* ids(filter("n", Op.IN, [2, 4, 99]))).toEqual(["e2", "e4"]);
        expect(yield* ids(filter("name", Op.IN, ["item-1", "item-7"]))).toEqual(["e1", "e7"]);
        expect(yield* ids(filter("meta.group", Op.EQUAL, "even"))).toEqual(["e2", "e4", "e6"]);
        expect(yield* ids(filter("meta.score", Op.GREATER_THAN, 9))).toEqual(["e7"]);
        // Numbers compare with numbers only: a string bound matches no number.
        expect(yield* ids(filter("n", Op.LESS_THAN, "9"))).toEqual([]);
        // A missing field: NOT_EQUAL matches it, EQUAL null matches it.
        expect(yield* ids(filter("extra", Op.NOT_EQUAL, true))).toHaveLength(6);
        expect(yield* ids(filter("extra", Op.EQUAL, null))).toHaveLength(6);
        // Every filter must hold.
        expect(
          yield* ids(
            filter("n", Op.GREATER_THAN, 1),
            filter("n", Op.LESS_THAN, 6),
            filter("meta.group", Op.EQUAL, "odd"),
          ),
        ).toEqual(["e3", "e5"]);
      }),
    );

    it.effect("order_by a document field (asc, desc) and create_time", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        // Ids in reverse of creation order, values in neither.
        const rows: ReadonlyArray<[string, number]> = [
          ["z", 30],
          ["y", 10],
          ["x", 20],
          ["w", 40],
        ];
        for (const [id, n] of rows) {
          yield* call("createEntity", { kind, id, document: { n } });
          yield* Effect.sleep("3 millis"); // distinct create times
        }
        const ids = (orderBy: string, descending = false) =>
          call("listEntities", { kind, orderBy, descending }).pipe(
            Effect.map((r) => r.entities.map((e) => e.id)),
          );
        expect(yield* ids("")).toEqual(["w", "x", "y", "z"]);
        expect(yield* ids("id", true)).toEqual(["z", "y", "x", "w"]);
        expect(yield* ids("document.n")).toEqual(["y", "x", "z", "w"]);
        expect(yield* ids("document.n", true)).toEqual(["w", "z", "x", "y"]);
        expect(yield* ids("create_time")).toEqual(["z", "y", "x", "w"]);
        expect(yield* ids("create_time", true)).toEqual(["w", "x", "y", "z"]);
        yield* Effect.sleep("3 millis");
        yield* call("updateEntity", { kind, id: "y", document: { n: 10 } });
        expect(yield* ids("update_time", true)).toEqual(["y", "w", "x", "z"]);
        yield* invalid(call("listEntities", { kind, orderBy: "version" }), "order_by");
        yield* invalid(call("listEntities", { kind, orderBy: "document.$where" }), "order_by");
      }),
    );

    it.effect("pagination: page_size 2 over 7 entities gives every entity exactly once", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        for (let n = 1; n <= 7; n++) {
          yield* call("createEntity", { kind, id: `e${n}`, document: { n: n % 3 } });
        }
        const walk = (orderBy: string, descending: boolean) =>
          allPages((pageToken) =>
            call("listEntities", { kind, orderBy, descending, pageSize: 2, pageToken }).pipe(
              Effect.tap((r) => expect(r.entities.length).toBeLessThanOrEqual(2)),
              Effect.map((r) => ({ items: r.entities.map((e) => e.id), next: r.nextPageToken })),
            ),
          );
        const byId = yield* walk("", false);
        expect(byId.pages).toBe(4);
        expect(byId.items).toEqual(["e1", "e2", "e3", "e4", "e5", "e6", "e7"]);
        // Ties (n repeats) are broken by id, in the same direction, so no entity is
        // skipped or repeated across pages.
        const ascending = ["e3", "e6", "e1", "e4", "e7", "e2", "e5"];
        expect((yield* walk("document.n", false)).items).toEqual(ascending);
        expect((yield* walk("document.n", true)).items).toEqual([...ascending].reverse());
        // Exactly one page: no token for an empty next page.
        const one = yield* call("listEntities", { kind, pageSize: 7 });
        expect(one.entities).toHaveLength(7);
        expect(one.nextPageToken).toBe("");
      }),
    );

    it.effect("a page token is only valid for the query it came from", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        for (let n = 1; n <= 5; n++) {
          yield* call("createEntity", { kind, id: `e${n}`, document: { n } });
        }
        const filters = [filter("n", Op.GREATER_THAN, 0)];
        const first = yield* call("listEntities", { kind, filters, pageSize: 2 });
        expect(first.nextPageToken).not.toBe("");
        const second = yield* call("listEntities", {
          kind,
          filters,
          pageSize: 2,
          pageToken: first.nextPageToken,
        });
        expect(second.entities.map((e) => e.id)).toEqual(["e3", "e4"]);
        yield* invalid(
          call("listEntities", {
            kind,
            filters: [filter("n", Op.GREATER_THAN, 1)],
            pageSize: 2,
            pageToken: first.nextPageToken,
          }),
          "page_token",
        );
        yield* invalid(
          call("listEntities", {
            kind,
            filters,
            orderBy: "document.n",
            pageSize: 2,
            pageToken: first.nextPageToken,
          }),
          "page_token",
        );
        yield* invalid(
          call("listEntities", { kind: unique("k"), filters, pageToken: first.nextPageToken }),
          "page_token",
        );
        yield* invalid(call("listEntities", { kind, pageToken: "not-a-token" }), "page_token");
      }),
    );

    it.effect("batch get returns found entities in request order and the missing ids", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        for (const id of ["a", "b", "c"])
          yield* call("createEntity", { kind, id, document: { id } });
        const res = yield* call("batchGetEntities", { kind, ids: ["c", "missing", "a", "gone"] });
        expect(res.entities.map((e) => [e.id, e.document])).toEqual([
          ["c", { id: "c" }],
          ["a", { id: "a" }],
        ]);
        expect(res.missingIds).toEqual(["missing", "gone"]);
        const none = yield* call("batchGetEntities", { kind, ids: [] });
        expect(none.entities).toEqual([]);
        expect(none.missingIds).toEqual([]);
        yield* invalid(
          call("batchGetEntities", { kind, ids: Array.from({ length: 1001 }, (_, i) => `e${i}`) }),
          "ids",
        );
      }),
    );
  });

// --- Bad input ----------------------------------------------------------------------

/** An object nested `depth` levels deep. */
const nested = (depth: number): JsonObject => {
  let doc: JsonObject = { leaf: true };
  for (let i = 1; i < depth; i++) doc = { d: doc };
  return doc;
};

const badInputTests = (it: It) =>
  describe("bad input", () => {
    it.effect("ids: empty, over 256 characters, ':' or NUL → InvalidArgument naming `id`", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        yield* invalid(call("getEntity", { kind, id: "" }), "id");
        for (const id of ["x".repeat(257), "a:b", "a\u0000b"]) {
          yield* invalid(call("createEntity", { kind, id, document: {} }), "id");
          yield* invalid(call("getEntity", { kind, id }), "id");
          yield* invalid(call("updateEntity", { kind, id, document: {} }), "id");
          yield* invalid(call("deleteEntity", { kind, id }), "id");
        }
        yield* invalid(call("batchGetEntities", { kind, ids: ["ok", "a:b"] }), "ids[1]");
        // 256 characters is fine.
        const { entity } = yield* call("createEntity", { kind, id: "x".repeat(256), document: {} });
        expect(entity?.id).toHaveLength(256);
      }),
    );

    it.effect("kinds: empty, upper case, spaces, too long → InvalidArgument naming `kind`", () =>
      Effect.gen(function* () {
        for (const kind of ["", "Flow", "a kind", "1flow", `k${"x".repeat(63)}`, "$where"]) {
          yield* invalid(call("createEntity", { kind, id: "e", document: {} }), "kind");
          yield* invalid(call("listEntities", { kind }), "kind");
        }
      }),
    );

    it.effect("documents: `$`-keys, `.`-keys, empty keys anywhere → InvalidArgument", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        const bad: ReadonlyArray<[JsonObject, string]> = [
          [{ $where: "sleep(1000)" }, "document.$where"],
          [{ a: { $set: 1 } }, "document.a.$set"],
          [{ list: [{ $gt: 1 }] }, "document.list[0].$gt"],
          [{ "a.b": 1 }, "document.a.b"],
          [{ a: { "": 1 } }, "document.a"],
        ];
        for (const [document, field] of bad) {
          yield* invalid(call("createEntity", { kind, id: "e", document }), field);
        }
        yield* call("createEntity", { kind, id: "e", document: { ok: 1 } });
        for (const [document, field] of bad) {
          yield* invalid(call("updateEntity", { kind, id: "e", document }), field);
        }
        // Through a mask too: the stored document would gain the bad key.
        yield* invalid(
          call("updateEntity", {
            kind,
            id: "e",
            document: { a: { $set: 1 } },
            updateMask: { paths: ["document.a"] },
          }),
        );
        expect((yield* call("getEntity", { kind, id: "e" })).entity?.document).toEqual({ ok: 1 });
      }),
    );

    it.effect("documents nested deeper than 64 levels → InvalidArgument", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        const e = yield* invalid(call("createEntity", { kind, id: "deep", document: nested(70) }));
        expect(e.violations[0]?.field).toMatch(/^document/);
        yield* call("createEntity", { kind, id: "ok", document: nested(32) });
      }),
    );

    it.effect("filters: `$where`-like fields, bad paths, missing operator or value", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        for (const field of ["$where", "a.$gt", "a..b", "", "a b", "$expr", "doc.$function"]) {
          yield* invalid(
            call("listEntities", { kind, filters: [filter(field, Op.EQUAL, 1)] }),
            "filters[0].field",
          );
        }
        yield* invalid(
          call("listEntities", {
            kind,
            filters: [filter("ok", Op.EQUAL, 1), { field: "n", operator: Op.UNSPECIFIED }],
          }),
          "filters[1].operator",
        );
        yield* invalid(
          call("listEntities", { kind, filters: [{ field: "n", operator: Op.EQUAL }] }),
          "filters[0].value",
        );
        yield* invalid(
          call("listEntities", { kind, filters: [filter("n", Op.EQUAL, { $regex: ".*" })] }),
          "filters[0].value",
        );
        yield* invalid(
          call("listEntities", { kind, filters: [filter("n", Op.IN, [1, [2]])] }),
          "filters[0].values[1]",
        );
        yield* invalid(
          call("listEntities", {
            kind,
            filters: Array.from({ length: 33 }, () => filter("n", Op.EQUAL, 1)),
          }),
          "filters",
        );
      }),
    );

    it.effect("labels: bad keys, long or NUL values, too many → InvalidArgument", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        const bad: ReadonlyArray<[Record<string, string>, string]> = [
          [{ "bad key": "v" }, 'labels["bad key"]'],
          [{ "": "v" }, 'labels[""]'],
          [{ [`k${"x".repeat(63)}`]: "v" }, `labels["k${"x".repeat(63)}"]`],
          [{ key: "v".repeat(257) }, 'labels["key"]'],
          [{ key: "a\u0000b" }, 'labels["key"]'],
          [Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`l${i}`, "v"])), "labels"],
        ];
        for (const [labels, field] of bad) {
          yield* invalid(call("createEntity", { kind, id: "e", document: {}, labels }), field);
        }
        yield* invalid(
          call("listEntities", { kind, labelSelector: { "bad key": "v" } }),
          'label_selector["bad key"]',
        );
      }),
    );

    it.effect("page sizes: negative → InvalidArgument; above the maximum is capped", () =>
      Effect.gen(function* () {
        const kind = unique("k");
        yield* invalid(call("listEntities", { kind, pageSize: -1 }), "page_size");
        yield* invalid(
          call("listVersions", { entityType: "flow", entityId: "f", pageSize: -5 }),
          "page_size",
        );
        yield* invalid(call("listServices", { pageSize: -1 }), "page_size");
        yield* invalid(call("listParameters", { pageSize: -1 }), "page_size");
        const capped = yield* call("listEntities", { kind, pageSize: 1_000_000 });
        expect(capped.entities).toEqual([]);
      }),
    );
  });

const documentLimitTests = (it: It) => {
  it.effect("documents over the configured limit → InvalidArgument naming `document`", () =>
    Effect.gen(function* () {
      const kind = unique("k");
      yield* invalid(
        call("createEntity", { kind, id: "big", document: { blob: "x".repeat(5000) } }),
        "document",
      );
      yield* call("createEntity", { kind, id: "small", document: { blob: "x".repeat(1000) } });
      yield* invalid(
        call("updateEntity", { kind, id: "small", document: { blob: "x".repeat(5000) } }),
        "document",
      );
      // A mask that would make the stored document too big is refused as well.
      yield* invalid(
        call("updateEntity", {
          kind,
          id: "small",
          document: { more: "y".repeat(3500) },
          updateMask: { paths: ["document.more"] },
        }),
        "document",
      );
      const { entity } = yield* call("getEntity", { kind, id: "small" });
      expect(entity?.version).toBe(1n);
    }),
  );
};

// --- Versions -----------------------------------------------------------------------

const versionTests = (it: It) =>
  describe("versions", () => {
    const record = (entityId: string, version: string, more: Record<string, unknown> = {}) =>
      call("createVersion", {
        version: { entityType: "processor", entityId, version, ...more },
      }).pipe(Effect.map((r) => r.version));
    const shuffled = <A>(items: ReadonlyArray<A>): A[] =>
      items
        .map((item) => ({ item, r: Math.random() }))
        .sort((a, b) => a.r - b.r)
        .map((x) => x.item);
    const ORDER = ["1.0.0-rc.1", "1.0.0", "1.9.0", "1.10.0", "2.0.0-alpha"];

    it.effect("create: ACTIVE, revision 1; bad semver → InvalidArgument", () =>
      Effect.gen(function* () {
        const id = unique("p");
        const v = yield* record(id, "1.2.3", {
          description: "first",
          releaseNotes: "notes",
          previousVersion: "1.2.2",
          compatibility: [{ entityType: "importer", range: "^1.0.0" }],
          status: VersionStatus.ARCHIVED, // ignored: set by the store
        });
        expect(v).toMatchObject({
          entityType: "processor",
          entityId: id,
          version: "1.2.3",
          status: VersionStatus.ACTIVE,
          description: "first",
          previousVersion: "1.2.2",
          revision: 1n,
        });
        expect(v?.compatibility.map((c) => [c.entityType, c.range])).toEqual([
          ["importer", "^1.0.0"],
        ]);
        expect(
          (yield* call("getVersion", { entityType: "processor", entityId: id, version: "1.2.3" }))
            .version,
        ).toEqual(v);
        for (const bad of ["1.0", "v1.0.0", "1.0.0.0", " 1.0.0", "latest", ""]) {
          yield* invalid(record(id, bad), "version.version");
        }
        yield* invalid(record(id, "1.0.0", { previousVersion: "one" }), "version.previous_version");
        yield* invalid(
          record(id, "1.0.0", {
            compatibility: [{ entityType: "importer", range: "not a range" }],
          }),
          "version.compatibility[0].range",
        );
        yield* invalid(
          call("createVersion", {
            version: { entityType: "Bad", entityId: "a:b", version: "1.0.0" },
          }),
          "version.entity_type",
          "version.entity_id",
        );
        yield* failure(
          call("getVersion", { entityType: "processor", entityId: id, version: "9.9.9" }),
          "NotFound",
        );
      }),
    );

    it.effect("create again: identical body is idempotent, a different body AlreadyExists", () =>
      Effect.gen(function* () {
        const id = unique("p");
        const first = yield* record(id, "1.0.0", { description: "d" });
        const retry = yield* record(id, "1.0.0", { description: "d" });
        expect(retry).toEqual(first);
        yield* failure(record(id, "1.0.0", { description: "other" }), "AlreadyExists");
        yield* failure(
          record(id, "1.0.0", {
            description: "d",
            compatibility: [{ entityType: "importer", range: ">=1" }],
          }),
          "AlreadyExists",
        );
      }),
    );

    it.effect("list in semver precedence order, descending too, across pages", () =>
      Effect.gen(function* () {
        const id = unique("p");
        for (const v of shuffled(ORDER)) yield* record(id, v);
        const list = (descending: boolean, pageSize = 0) =>
          allPages((pageToken) =>
            call("listVersions", {
              entityType: "processor",
              entityId: id,
              descending,
              pageSize,
              pageToken,
            }).pipe(
              Effect.map((r) => ({
                items: r.versions.map((v) => v.version),
                next: r.nextPageToken,
              })),
            ),
          );
        expect((yield* list(false)).items).toEqual(ORDER);
        expect((yield* list(true)).items).toEqual([...ORDER].reverse());
        const paged = yield* list(false, 2);
        expect(paged).toEqual({ items: ORDER, pages: 3 });
        expect((yield* list(true, 2)).items).toEqual([...ORDER].reverse());
        // A status filter.
        yield* call("updateVersionStatus", {
          entityType: "processor",
          entityId: id,
          version: "1.9.0",
          status: VersionStatus.DEPRECATED,
        });
        const deprecated = yield* call("listVersions", {
          entityType: "processor",
          entityId: id,
          statuses: [VersionStatus.DEPRECATED],
        });
        expect(deprecated.versions.map((v) => v.version)).toEqual(["1.9.0"]);
        const other = yield* call("listVersions", {
          entityType: "processor",
          entityId: unique("p"),
        });
        expect(other.versions).toEqual([]);
      }),
    );

    it.effect("latest: highest ACTIVE release; deprecated and pre-releases on request", () =>
      Effect.gen(function* () {
        const id = unique("p");
        const latest = (includeDeprecated = false, includePrerelease = false) =>
          call("getLatestVersion", {
            entityType: "processor",
            entityId: id,
            includeDeprecated,
            includePrerelease,
          }).pipe(Effect.map((r) => r.version?.version));
        const setStatus = (version: string, status: VersionStatus) =>
          call("updateVersionStatus", { entityType: "processor", entityId: id, version, status });
        yield* failure(latest(), "NotFound");
        for (const v of shuffled(ORDER)) yield* record(id, v);
        expect(yield* latest()).toBe("1.10.0");
        expect(yield* latest(false, true)).toBe("2.0.0-alpha");
        yield* setStatus("1.10.0", VersionStatus.DEPRECATED);
        expect(yield* latest()).toBe("1.9.0");
        expect(yield* latest(true)).toBe("1.10.0");
        yield* setStatus("1.10.0", VersionStatus.ARCHIVED);
        expect(yield* latest(true)).toBe("1.9.0");
        for (const v of ["1.0.0-rc.1", "1.0.0", "1.9.0"])
          yield* setStatus(v, VersionStatus.ARCHIVED);
        yield* failure(latest(true), "NotFound");
        expect(yield* latest(true, true)).toBe("2.0.0-alpha");
      }),
    );

    it.effect("status: ACTIVE → DEPRECATED → ARCHIVED only; no way back", () =>
      Effect.gen(function* () {
        const id = unique("p");
        const setStatus = (version: string, status: VersionStatus, expectedRevision?: bigint) =>
          call("updateVersionStatus", {
            entityType: "processor",
            entityId: id,
            version,
            status,
            ...(expectedRevision === undefined ? {} : { expectedRevision }),
          }).pipe(Effect.map((r) => r.version));
        yield* record(id, "1.0.0");
        yield* record(id, "2.0.0");
        const deprecated = yield* setStatus("1.0.0", VersionStatus.DEPRECATED, 1n);
        expect(deprecated).toMatchObject({ status: VersionStatus.DEPRECATED, revision: 2n });
        yield* failure(setStatus("1.0.0", VersionStatus.ACTIVE), "FailedPrecondition");
        yield* failure(setStatus("1.0.0", VersionStatus.ARCHIVED, 1n), "Aborted");
        const archived = yield* setStatus("1.0.0", VersionStatus.ARCHIVED, 2n);
        expect(archived).toMatchObject({ status: VersionStatus.ARCHIVED, revision: 3n });
        const back = yield* failure(setStatus("1.0.0", VersionStatus.ACTIVE), "FailedPrecondition");
        expect(back.code).toBe("VERSION_ERROR.ARCHIVED_VERSION");
        yield* failure(setStatus("1.0.0", VersionStatus.DEPRECATED), "FailedPrecondition");
        // ACTIVE straight to ARCHIVED is forward, so allowed.
        expect((yield* setStatus("2.0.0", VersionStatus.ARCHIVED))?.status).toBe(
          VersionStatus.ARCHIVED,
        );
        yield* invalid(setStatus("2.0.0", VersionStatus.UNSPECIFIED), "status");
        yield* failure(setStatus("3.0.0", VersionStatus.DEPRECATED), "NotFound");
      }),
    );

    it.effect("compatibility: a candidate against the ranges its dependent declares", () =>
      Effect.gen(function* () {
        const exporter = unique("x");
        const processor = unique("p");
        yield* call("createVersion", {
          version: {
            entityType: "exporter",
            entityId: exporter,
            version: "2.0.0",
            compatibility: [{ entityType: "processor", range: ">=1.0.0 <2.0.0" }],
          },
        });
        const check = (candidateEntityType: string, candidateVersion: string) =>
          call("checkCompatibility", {
            dependentEntityType: "exporter",
            dependentEntityId: exporter,
            dependentVersion: "2.0.0",
            candidateEntityType,
            candidateEntityId: processor,
            candidateVersion,
          });
        const ok = yield* check("processor", "1.5.0");
        expect(ok.compatible).toBe(true);
        expect(ok.requirements.map((r) => r.range)).toEqual([">=1.0.0 <2.0.0"]);
        expect(ok.candidateStatus).toBe(VersionStatus.UNSPECIFIED); // not recorded
        const tooNew = yield* check("processor", "2.1.0");
        expect(tooNew.compatible).toBe(false);
        expect(tooNew.reason).toMatch(/2\.1\.0/);
        const unrelated = yield* check("importer", "9.0.0");
        expect(unrelated.compatible).toBe(true);
        expect(unrelated.requirements).toEqual([]);
        expect(unrelated.reason).not.toBe("");
        // A recorded candidate: its status counts; ARCHIVED is never compatible.
        yield* call("createVersion", {
          version: { entityType: "processor", entityId: processor, version: "1.6.0" },
        });
        const active = yield* check("processor", "1.6.0");
        expect(active).toMatchObject({ compatible: true, candidateStatus: VersionStatus.ACTIVE });
        yield* call("updateVersionStatus", {
          entityType: "processor",
          entityId: processor,
          version: "1.6.0",
          status: VersionStatus.DEPRECATED,
        });
        expect(yield* check("processor", "1.6.0")).toMatchObject({
          compatible: true,
          candidateStatus: VersionStatus.DEPRECATED,
        });
        yield* call("updateVersionStatus", {
          entityType: "processor",
          entityId: processor,
          version: "1.6.0",
          status: VersionStatus.ARCHIVED,
        });
        const archived = yield* check("processor", "1.6.0");
        expect(archived).toMatchObject({
          compatible: false,
          candidateStatus: VersionStatus.ARCHIVED,
        });
        expect(archived.reason).not.toBe("");
        // The dependent must be recorded; versions must be semver.
        yield* failure(
          call("checkCompatibility", {
            dependentEntityType: "exporter",
            dependentEntityId: unique("x"),
            dependentVersion: "2.0.0",
            candidateEntityType: "processor",
            candidateEntityId: processor,
            candidateVersion: "1.0.0",
          }),
          "NotFound",
        );
        yield* invalid(check("processor", "1.5"), "candidate_version");
      }),
    );
  });

// --- Parameters ----------------------------------------------------------------------

const parameterTests = (it: It) =>
  describe("parameters", () => {
    /** A parameter key of this test's own. */
    const paramKey = () => unique("p.");
    const set = (
      key: string,
      value: JsonValue,
      scope: Scope = Scope.SYSTEM,
      scopeId = "",
      expectedRevision?: bigint,
    ) =>
      call("setParameter", {
        key,
        scope,
        scopeId,
        value: val(value),
        ...(expectedRevision === undefined ? {} : { expectedRevision }),
      }).pipe(Effect.map((r) => r.parameter));
    const get = (key: string, scope: Scope = Scope.SYSTEM, scopeId = "") =>
      call("getParameter", { key, scope, scopeId }).pipe(Effect.map((r) => r.parameter));
    const define = (definition: Request<"defineParameter">["definition"]) =>
      call("defineParameter", { definition }).pipe(Effect.map((r) => r.definition));
    const resolve = (keys: string[], context: Request<"resolveParameters">["context"] = {}) =>
      call("resolveParameters", { keys, context }).pipe(Effect.map((r) => r.parameters));

    it.effect("set and get; revisions count up; NotFound when unset at that scope", () =>
      Effect.gen(function* () {
        const key = paramKey();
        yield* failure(get(key), "NotFound");
        const first = yield* set(key, 10);
        expect(first).toMatchObject({ key, scope: Scope.SYSTEM, scopeId: "", revision: 1n });
        expect(jsonOf(first?.value)).toBe(10);
        const second = yield* set(key, { batch: [1, 2], on: true });
        expect(second?.revision).toBe(2n);
        expect(second?.createTime).toEqual(first?.createTime);
        const got = yield* get(key);
        expect(got).toEqual(second);
        expect(jsonOf(got?.value)).toEqual({ batch: [1, 2], on: true });
        yield* failure(get(key, Scope.FLOW, "flow-1"), "NotFound");
        const flow = yield* set(key, "per flow", Scope.FLOW, "flow-1");
        expect(flow?.revision).toBe(1n);
        expect(jsonOf((yield* get(key))?.value)).toEqual({ batch: [1, 2], on: true });
      }),
    );

    it.effect("expected_revision: mismatch → Aborted; 0 means only if unset", () =>
      Effect.gen(function* () {
        const key = paramKey();
        const created = yield* set(key, 1, Scope.SYSTEM, "", 0n);
        expect(created?.revision).toBe(1n);
        yield* failure(set(key, 2, Scope.SYSTEM, "", 0n), "Aborted");
        yield* failure(set(key, 2, Scope.SYSTEM, "", 5n), "Aborted");
        expect((yield* set(key, 2, Scope.SYSTEM, "", 1n))?.revision).toBe(2n);
        yield* failure(set(key, 3, Scope.SYSTEM, "", 1n), "Aborted");
        expect(jsonOf((yield* get(key))?.value)).toBe(2);
        yield* failure(set(paramKey(), 1, Scope.SYSTEM, "", 1n), "Aborted");
        yield* failure(
          call("deleteParameter", { key, scope: Scope.SYSTEM, expectedRevision: 1n }),
          "Aborted",
        );
        yield* call("deleteParameter", { key, scope: Scope.SYSTEM, expectedRevision: 2n });
        yield* failure(get(key), "NotFound");
      }),
    );

    it.effect("history: every revision newest first, deletions included", () =>
      Effect.gen(function* () {
        const key = paramKey();
        const history = (pageSize = 0) =>
          allPages((pageToken) =>
            call("getParameterHistory", {
              key,
              scope: Scope.SERVICE_INSTANCE,
              scopeId: "svc-1",
              pageSize,
              pageToken,
            }).pipe(
              Effect.map((r) => ({
                items: r.revisions.map((h) => [h.revision, h.deleted, jsonOf(h.value)]),
                next: r.nextPageToken,
              })),
            ),
          );
        yield* failure(history(), "NotFound");
        yield* set(key, "a", Scope.SERVICE_INSTANCE, "svc-1");
        yield* set(key, "b", Scope.SERVICE_INSTANCE, "svc-1");
        yield* call("deleteParameter", { key, scope: Scope.SERVICE_INSTANCE, scopeId: "svc-1" });
        yield* failure(get(key, Scope.SERVICE_INSTANCE, "svc-1"), "NotFound");
        yield* failure(
          call("deleteParameter", { key, scope: Scope.SERVICE_INSTANCE, scopeId: "svc-1" }),
          "NotFound",
        );
        expect((yield* history()).items).toEqual([
          [3n, true, undefined],
          [2n, false, "b"],
          [1n, false, "a"],
        ]);
        // Set again after a delete: numbering goes on, the history is kept.
        const again = yield* set(key, "c", Scope.SERVICE_INSTANCE, "svc-1");
        expect(again?.revision).toBe(4n);
        const paged = yield* history(1);
        expect(paged.pages).toBe(4);
        expect(paged.items.map(([r]) => r)).toEqual([4n, 3n, 2n, 1n]);
      }),
    );

    it.effect("list by scope and key prefix, ordered by key, across pages", () =>
      Effect.gen(function* () {
        const prefix = unique("l");
        const type = unique("t");
        // Keys chosen so that key order differs from any `key:scope` string order.
        const keys = [
          `${prefix}.a`,
          `${prefix}.a-b`,
          `${prefix}.a.b`,
          `${prefix}.a0`,
          `${prefix}.b`,
        ];
        for (const key of [...keys].reverse()) yield* set(key, key, Scope.SERVICE_TYPE, type);
        yield* set(`${prefix}.a`, "system", Scope.SYSTEM);
        yield* set(`${prefix}.a`, "other", Scope.SERVICE_TYPE, unique("t"));
        const list = (init: Request<"listParameters">) =>
          allPages((pageToken) =>
            call("listParameters", { ...init, pageSize: 2, pageToken }).pipe(
              Effect.map((r) => ({
                items: r.parameters.map((p) => [p.key, p.scope, p.scopeId]),
                next: r.nextPageToken,
              })),
            ),
          );
        const ofType = yield* list({ scope: Scope.SERVICE_TYPE, scopeId: type, keyPrefix: prefix });
        expect(ofType).toEqual({ items: keys.map((k) => [k, Scope.SERVICE_TYPE, type]), pages: 3 });
        const system = yield* list({ scope: Scope.SYSTEM, keyPrefix: prefix });
        expect(system.items).toEqual([[`${prefix}.a`, Scope.SYSTEM, ""]]);
        const everywhere = yield* list({ keyPrefix: `${prefix}.a` });
        expect(everywhere.items.map(([k]) => k)).toEqual([
          `${prefix}.a`,
          `${prefix}.a`,
          `${prefix}.a`,
          `${prefix}.a-b`,
          `${prefix}.a.b`,
          `${prefix}.a0`,
        ]);
        yield* invalid(call("listParameters", { scopeId: type }), "scope_id");
        yield* invalid(call("listParameters", { keyPrefix: "bad prefix!" }), "key_prefix");
      }),
    );

    it.effect("resolve: the most specific scope set wins, and says where it came from", () =>
      Effect.gen(function* () {
        const key = paramKey();
        const serviceType = unique("t");
        const context = {
          serviceType,
          serviceId: unique("svc-"),
          flowId: unique("flow-"),
          executionId: unique("exec-"),
        };
        const scopes: ReadonlyArray<[Scope, string]> = [
          [Scope.SYSTEM, ""],
          [Scope.SERVICE_TYPE, context.serviceType],
          [Scope.SERVICE_INSTANCE, context.serviceId],
          [Scope.FLOW, context.flowId],
          [Scope.EXECUTION, context.executionId],
        ];
        // Set from most to least specific, so write order cannot be what decides.
        for (const [scope, scopeId] of [...scopes].reverse()) {
          yield* set(key, `${Scope[scope]}`, scope, scopeId);
        }
        const from = (ctx: Request<"resolveParameters">["context"]) =>
          resolve([key], ctx).pipe(
            Effect.map((r) => {
              expect(r).toHaveLength(1);
              const p = r[0];
              return [jsonOf(p?.value), p?.sourceScope, p?.sourceScopeId, p?.isDefault];
            }),
          );
        expect(yield* from(context)).toEqual([
          "EXECUTION",
          Scope.EXECUTION,
          context.executionId,
          false,
        ]);
        expect(yield* from({ ...context, executionId: "" })).toEqual([
          "FLOW",
          Scope.FLOW,
          context.flowId,
          false,
        ]);
        expect(yield* from({ serviceType, serviceId: context.serviceId })).toEqual([
          "SERVICE_INSTANCE",
          Scope.SERVICE_INSTANCE,
          context.serviceId,
          false,
        ]);
        expect(yield* from({ serviceType })).toEqual([
          "SERVICE_TYPE",
          Scope.SERVICE_TYPE,
          serviceType,
          false,
        ]);
        expect(yield* from({})).toEqual(["SYSTEM", Scope.SYSTEM, "", false]);
        // Other ids of the same scopes take no part.
        expect(
          yield* from({
            serviceType: unique("t"),
            flowId: "other-flow",
            executionId: "other-exec",
          }),
        ).toEqual(["SYSTEM", Scope.SYSTEM, "", false]);
        // The revision of the value used.
        yield* set(key, "FLOW again", Scope.FLOW, context.flowId);
        const [flow] = yield* resolve([key], { ...context, executionId: "" });
        expect(flow?.revision).toBe(2n);
        // Listing one key across scopes: least specific scope first.
        const listed = yield* call("listParameters", { keyPrefix: key });
        expect(listed.parameters.map((p) => p.scope)).toEqual(scopes.map(([s]) => s));
        // A key with no value and no definition is left out.
        expect(yield* resolve([paramKey()], context)).toEqual([]);
      }),
    );

    it.effect("resolve: a definition's default applies when no scope has a value", () =>
      Effect.gen(function* () {
        const key = paramKey();
        const definition = yield* define({
          key,
          dataType: DataType.INTEGER,
          defaultValue: val(7),
          minimum: 1,
          maximum: 100,
          description: "batch size",
        });
        expect(definition).toMatchObject({
          key,
          dataType: DataType.INTEGER,
          minimum: 1,
          maximum: 100,
        });
        expect(jsonOf(definition?.defaultValue)).toBe(7);
        const got = yield* call("getParameterDefinition", { key });
        expect(got.definition).toEqual(definition);
        const [byDefault] = yield* resolve([key]);
        expect(byDefault).toMatchObject({
          key,
          isDefault: true,
          sourceScope: Scope.UNSPECIFIED,
          sourceScopeId: "",
          revision: 0n,
        });
        expect(jsonOf(byDefault?.value)).toBe(7);
        yield* set(key, 42, Scope.FLOW, "f1");
        const [set42] = yield* resolve([key], { flowId: "f1" });
        expect(set42).toMatchObject({
          isDefault: false,
          sourceScope: Scope.FLOW,
          sourceScopeId: "f1",
        });
        expect(jsonOf(set42?.value)).toBe(42);
        expect((yield* resolve([key], { flowId: "f2" }))[0]?.isDefault).toBe(true);
        yield* failure(call("getParameterDefinition", { key: paramKey() }), "NotFound");
        const listed = yield* call("listParameterDefinitions", { keyPrefix: key });
        expect(listed.definitions.map((d) => d.key)).toEqual([key]);
      }),
    );

    it.effect("set is checked against the definition: type, pattern, range, enumeration", () =>
      Effect.gen(function* () {
        const text = paramKey();
        const count = paramKey();
        const mode = paramKey();
        yield* define({ key: text, dataType: DataType.STRING, pattern: "[a-z]+" });
        yield* define({ key: count, dataType: DataType.INTEGER, minimum: 1, maximum: 10 });
        yield* define({
          key: mode,
          dataType: DataType.STRING,
          allowedValues: [val("fast"), val("safe")],
        });
        const TYPE = "CONFIGURATION_ERROR.INVALID_PARAMETER_TYPE";
        const VALUE = "CONFIGURATION_ERROR.INVALID_PARAMETER_VALUE";
        yield* withCode(set(text, 5), "InvalidArgument", TYPE);
        yield* withCode(set(text, "ABC"), "InvalidArgument", VALUE);
        yield* withCode(set(text, "abc1"), "InvalidArgument", VALUE); // the whole value must match
        yield* set(text, "abc");
        yield* withCode(set(count, "5"), "InvalidArgument", TYPE);
        yield* withCode(set(count, 2.5), "InvalidArgument", TYPE);
        yield* withCode(set(count, 11), "InvalidArgument", VALUE);
        yield* withCode(set(count, 0, Scope.FLOW, "f1"), "InvalidArgument", VALUE);
        yield* set(count, 10);
        yield* withCode(set(mode, "slow"), "InvalidArgument", VALUE);
        yield* withCode(set(mode, true), "InvalidArgument", TYPE);
        yield* set(mode, "safe");
        const e = yield* invalid(set(count, 99), "value");
        expect(e.message).toMatch(/10/);
        // Nothing invalid was stored.
        expect(jsonOf((yield* get(count))?.value)).toBe(10);
      }),
    );

    it.effect("resolve fails when a required key or a dependency has no value", () =>
      Effect.gen(function* () {
        const required = paramKey();
        const main = paramKey();
        const dependency = paramKey();
        yield* define({ key: required, dataType: DataType.STRING, required: true });
        const missing = yield* withCode(
          resolve([required]),
          "FailedPrecondition",
          "CONFIGURATION_ERROR.MISSING_PARAMETER",
        );
        expect(missing.message).toContain(required);
        yield* set(required, "here", Scope.FLOW, "f1");
        yield* withCode(
          resolve([required], { flowId: "f2" }),
          "FailedPrecondition",
          "CONFIGURATION_ERROR.MISSING_PARAMETER",
        );
        expect(jsonOf((yield* resolve([required], { flowId: "f1" }))[0]?.value)).toBe("here");

        yield* define({ key: main, dataType: DataType.BOOLEAN, dependsOn: [dependency] });
        expect(yield* resolve([main])).toEqual([]); // main has no value: nothing to depend on
        yield* set(main, true);
        yield* withCode(
          resolve([main]),
          "FailedPrecondition",
          "CONFIGURATION_ERROR.MISSING_DEPENDENT_PARAMETER",
        );
        yield* withCode(
          resolve([main, dependency]),
          "FailedPrecondition",
          "CONFIGURATION_ERROR.MISSING_DEPENDENT_PARAMETER",
        );
        yield* set(dependency, "there", Scope.FLOW, "f1");
        yield* withCode(
          resolve([main], { flowId: "f2" }),
          "FailedPrecondition",
          "CONFIGURATION_ERROR.MISSING_DEPENDENT_PARAMETER",
        );
        // The dependency resolves in this context, whether or not it was asked for.
        expect((yield* resolve([main], { flowId: "f1" })).map((p) => p.key)).toEqual([main]);
        expect((yield* resolve([main, dependency], { flowId: "f1" })).map((p) => p.key)).toEqual([
          main,
          dependency,
        ]);
      }),
    );

    it.effect("resolve fails when a stored value no longer fits a newer definition", () =>
      Effect.gen(function* () {
        const key = paramKey();
        yield* set(key, "abc");
        yield* define({ key, dataType: DataType.INTEGER });
        yield* withCode(
          resolve([key]),
          "FailedPrecondition",
          "CONFIGURATION_ERROR.INVALID_PARAMETER_TYPE",
        );
      }),
    );

    it.effect("define rejects a definition that contradicts itself", () =>
      Effect.gen(function* () {
        const key = paramKey();
        yield* invalid(
          define({ key, dataType: DataType.INTEGER, defaultValue: val("seven") }),
          "definition.default_value",
        );
        yield* invalid(
          define({ key, dataType: DataType.INTEGER, minimum: 5, defaultValue: val(1) }),
          "definition.default_value",
        );
        yield* invalid(
          define({
            key,
            dataType: DataType.STRING,
            allowedValues: [val("a")],
            defaultValue: val("b"),
          }),
          "definition.default_value",
        );
        yield* invalid(
          define({ key, dataType: DataType.NUMBER, minimum: 5, maximum: 1 }),
          "definition.minimum",
        );
        yield* invalid(
          define({ key, dataType: DataType.STRING, pattern: "(" }),
          "definition.pattern",
        );
        yield* invalid(define({ key, dataType: DataType.UNSPECIFIED }), "definition.data_type");
        yield* invalid(define({ key: "bad key", dataType: DataType.STRING }), "definition.key");
        yield* invalid(
          define({ key, dataType: DataType.STRING, dependsOn: [key] }),
          "definition.depends_on[0]",
        );
        yield* failure(call("getParameterDefinition", { key }), "NotFound");
        // Redefining replaces the definition.
        yield* define({ key, dataType: DataType.STRING });
        const replaced = yield* define({ key, dataType: DataType.NUMBER, defaultValue: val(1.5) });
        expect(replaced?.dataType).toBe(DataType.NUMBER);
        expect((yield* call("getParameterDefinition", { key })).definition?.dataType).toBe(
          DataType.NUMBER,
        );
      }),
    );

    it.effect("bad keys, scopes and scope ids → InvalidArgument", () =>
      Effect.gen(function* () {
        yield* invalid(set("", 1), "key");
        yield* invalid(set("bad key", 1), "key");
        yield* invalid(set("a:b", 1), "key");
        yield* invalid(set("x".repeat(257), 1), "key");
        yield* invalid(set(paramKey(), 1, Scope.UNSPECIFIED), "scope");
        yield* invalid(set(paramKey(), 1, Scope.SYSTEM, "not-empty"), "scope_id");
        yield* invalid(set(paramKey(), 1, Scope.FLOW, ""), "scope_id");
        yield* invalid(set(paramKey(), 1, Scope.FLOW, "a:b"), "scope_id");
        yield* invalid(set(paramKey(), 1, Scope.EXECUTION, "x".repeat(257)), "scope_id");
        yield* invalid(set(paramKey(), 1, Scope.SERVICE_TYPE, "Not A Type"), "scope_id");
        yield* invalid(set(paramKey(), { $where: 1 }), "value.$where");
        yield* invalid(call("setParameter", { key: paramKey(), scope: Scope.SYSTEM }), "value");
        yield* invalid(resolve(["ok", "bad key"]), "keys[1]");
        yield* invalid(resolve([], { flowId: "a:b" }), "context.flow_id");
      }),
    );
  });

// --- Service registry ----------------------------------------------------------------

const registryTests = (it: It) =>
  describe("service registry", () => {
    const register = (service: Request<"registerService">["service"], leaseMs?: number) =>
      call("registerService", {
        service,
        ...(leaseMs === undefined ? {} : { leaseDuration: durationFromMs(leaseMs) }),
      });
    const setStatus = (serviceId: string, version: string, status: Status, reason = "") =>
      call("updateServiceStatus", { serviceId, version, status, reason }).pipe(
        Effect.map((r) => r.service),
      );
    const get = (serviceId: string, version = "") =>
      call("getService", { serviceId, version }).pipe(Effect.map((r) => r.service));

    it.effect(
      "register: created, UNINITIALIZED, HEALTHY, revision 1; store-set fields ignored",
      () =>
        Effect.gen(function* () {
          const serviceId = unique("svc-");
          const res = yield* register({
            serviceId,
            version: "1.0.0",
            serviceType: "importer",
            interfaceVersion: "1.0.0",
            protocol: "grpc",
            endpoints: ["127.0.0.1:5000"],
            capabilities: ["csv"],
            metadata: { zone: "a" },
            configurationSchema: [{ key: "batch.size", dataType: DataType.INTEGER }],
            status: Status.READY,
            revision: 99n,
          });
          expect(res.created).toBe(true);
          expect(res.service).toMatchObject({
            serviceId,
            version: "1.0.0",
            serviceType: "importer",
            protocol: "grpc",
            endpoints: ["127.0.0.1:5000"],
            capabilities: ["csv"],
            metadata: { zone: "a" },
            status: Status.UNINITIALIZED,
            health: Health.HEALTHY,
            revision: 1n,
          });
          expect(res.service?.configurationSchema.map((d) => d.key)).toEqual(["batch.size"]);
          expect(Number(res.service?.leaseDuration?.seconds)).toBe(30); // the default lease
          expect(msOf(res.service?.leaseExpireTime)).toBeGreaterThan(Date.now() + 25_000);
          expect(yield* get(serviceId, "1.0.0")).toEqual(res.service);
        }),
    );

    it.effect("re-register: updates in place (created false, revision +1), status kept", () =>
      Effect.gen(function* () {
        const serviceId = unique("svc-");
        const base = { serviceId, version: "1.0.0", serviceType: "processor", endpoints: ["a:1"] };
        yield* register(base);
        yield* setStatus(serviceId, "1.0.0", Status.INITIALIZED);
        const moved = yield* register({ ...base, endpoints: ["b:2", "c:3"] });
        expect(moved.created).toBe(false);
        expect(moved.service).toMatchObject({
          endpoints: ["b:2", "c:3"],
          status: Status.INITIALIZED,
          revision: 3n,
        });
        // Nothing changed: no new revision (only the lease is renewed).
        const same = yield* register({ ...base, endpoints: ["b:2", "c:3"] });
        expect(same.service?.revision).toBe(3n);
        // A configuration change requires re-initialisation.
        const reconfigured = yield* register({
          ...base,
          endpoints: ["b:2", "c:3"],
          configurationSchema: [{ key: "mode", dataType: DataType.STRING }],
        });
        expect(reconfigured.service).toMatchObject({ status: Status.UNINITIALIZED, revision: 4n });
      }),
    );

    it.effect("get without a version: the highest registered by semver precedence", () =>
      Effect.gen(function* () {
        const serviceId = unique("svc-");
        for (const version of ["1.9.0", "1.10.0", "1.2.0"]) {
          yield* register({ serviceId, version, serviceType: "exporter" });
        }
        expect((yield* get(serviceId))?.version).toBe("1.10.0");
        expect((yield* get(serviceId, "1.9.0"))?.version).toBe("1.9.0");
        yield* failure(get(serviceId, "2.0.0"), "NotFound");
        yield* failure(get(unique("svc-")), "NotFound");
      }),
    );

    it.effect("list by type, status, health and version range, across pages", () =>
      Effect.gen(function* () {
        const serviceType = unique("t");
        const a = unique("a-");
        const b = unique("b-");
        const c = unique("c-");
        const regs: ReadonlyArray<[string, string]> = [
          [c, "1.5.0"],
          [a, "1.10.0"],
          [b, "2.0.0"],
          [a, "1.9.0"],
        ];
        for (const [serviceId, version] of regs)
          yield* register({ serviceId, version, serviceType });
        yield* register({
          serviceId: unique("other-"),
          version: "1.0.0",
          serviceType: unique("t"),
        });
        yield* setStatus(c, "1.5.0", Status.INITIALIZED);
        const list = (init: Request<"listServices">, pageSize = 0) =>
          allPages((pageToken) =>
            call("listServices", { serviceType, ...init, pageSize, pageToken }).pipe(
              Effect.map((r) => ({
                items: r.services.map((s) => `${s.serviceId}@${s.version}`),
                next: r.nextPageToken,
              })),
            ),
          ).pipe(Effect.map((r) => r.items));
        const all = [`${a}@1.9.0`, `${a}@1.10.0`, `${b}@2.0.0`, `${c}@1.5.0`];
        expect(yield* list({})).toEqual(all);
        expect(yield* list({}, 1)).toEqual(all);
        expect(yield* list({ status: Status.INITIALIZED })).toEqual([`${c}@1.5.0`]);
        expect(yield* list({ status: Status.READY })).toEqual([]);
        expect(yield* list({ versionRange: "^1.0.0" })).toEqual([
          `${a}@1.9.0`,
          `${a}@1.10.0`,
          `${c}@1.5.0`,
        ]);
        expect(yield* list({ versionRange: "^1.0.0" }, 1)).toEqual([
          `${a}@1.9.0`,
          `${a}@1.10.0`,
          `${c}@1.5.0`,
        ]);
        expect(yield* list({ versionRange: ">=1.10.0" }, 2)).toEqual([`${a}@1.10.0`, `${b}@2.0.0`]);
        expect(yield* list({ health: Health.HEALTHY }, 3)).toEqual(all);
        expect(yield* list({ health: Health.EXPIRED })).toEqual([]);
        expect(yield* list({ serviceId: a })).toEqual([`${a}@1.9.0`, `${a}@1.10.0`]);
        yield* invalid(call("listServices", { versionRange: "not a range" }), "version_range");
        yield* invalid(call("listServices", { serviceType: "Bad Type" }), "service_type");
      }),
    );

    it.effect("lifecycle: legal moves succeed, illegal ones are FailedPrecondition", () =>
      Effect.gen(function* () {
        const serviceId = unique("svc-");
        const version = "1.0.0";
        const to = (status: Status, reason = "") => setStatus(serviceId, version, status, reason);
        const illegal = (status: Status) => failure(to(status), "FailedPrecondition");
        yield* register({ serviceId, version, serviceType: "processor" });
        yield* illegal(Status.READY);
        yield* illegal(Status.PROCESSING);
        expect((yield* to(Status.INITIALIZED))?.status).toBe(Status.INITIALIZED);
        yield* illegal(Status.PROCESSING);
        expect((yield* to(Status.READY))?.status).toBe(Status.READY);
        expect((yield* to(Status.PROCESSING))?.status).toBe(Status.PROCESSING);
        expect((yield* to(Status.READY))?.status).toBe(Status.READY);
        expect((yield* to(Status.PROCESSING))?.status).toBe(Status.PROCESSING);
        const failed = yield* to(Status.ERROR, "disk full");
        expect(failed).toMatchObject({ status: Status.ERROR, statusReason: "disk full" });
        yield* illegal(Status.READY);
        yield* illegal(Status.PROCESSING);
        expect((yield* to(Status.INITIALIZED))?.status).toBe(Status.INITIALIZED);
        expect((yield* to(Status.READY))?.status).toBe(Status.READY);
        const terminated = yield* to(Status.TERMINATED, "shutdown");
        expect(terminated?.status).toBe(Status.TERMINATED);
        yield* illegal(Status.READY);
        yield* illegal(Status.INITIALIZED);
        yield* illegal(Status.ERROR);
        const heartbeat = yield* failure(
          call("heartbeat", { serviceId, version }),
          "FailedPrecondition",
        );
        expect(heartbeat.message).toMatch(/TERMINATED/);
        // Every state may go to ERROR and to TERMINATED.
        for (const path of [[], [Status.INITIALIZED], [Status.INITIALIZED, Status.READY]]) {
          for (const end of [Status.ERROR, Status.TERMINATED]) {
            const id = unique("svc-");
            yield* register({ serviceId: id, version, serviceType: "processor" });
            for (const s of path) yield* setStatus(id, version, s);
            expect((yield* setStatus(id, version, end))?.status).toBe(end);
          }
        }
        yield* invalid(to(Status.UNSPECIFIED), "status");
        yield* failure(setStatus(unique("svc-"), version, Status.INITIALIZED), "NotFound");
      }),
    );

    it.effect("status change with expected_revision: Aborted on mismatch", () =>
      Effect.gen(function* () {
        const serviceId = unique("svc-");
        const { service } = yield* register({
          serviceId,
          version: "1.0.0",
          serviceType: "importer",
        });
        const revision = service?.revision ?? 0n;
        yield* failure(
          call("updateServiceStatus", {
            serviceId,
            version: "1.0.0",
            status: Status.INITIALIZED,
            expectedRevision: revision + 1n,
          }),
          "Aborted",
        );
        const ok = yield* call("updateServiceStatus", {
          serviceId,
          version: "1.0.0",
          status: Status.INITIALIZED,
          expectedRevision: revision,
        });
        expect(ok.service?.revision).toBe(revision + 1n);
      }),
    );

    it.effect(
      "a lease not renewed expires (health EXPIRED, status kept); a heartbeat renews it",
      () =>
        Effect.gen(function* () {
          const serviceId = unique("svc-");
          const serviceType = unique("t");
          const version = "1.0.0";
          const registered = yield* register({ serviceId, version, serviceType }, 1000);
          expect(registered.service?.health).toBe(Health.HEALTHY);
          expect(Number(registered.service?.leaseDuration?.seconds)).toBe(1);
          yield* setStatus(serviceId, version, Status.INITIALIZED);
          yield* setStatus(serviceId, version, Status.READY);
          yield* Effect.sleep("1500 millis");
          expect(yield* get(serviceId, version)).toMatchObject({
            health: Health.EXPIRED,
            status: Status.READY,
          });
          const healthy = (health: Health) =>
            call("listServices", { serviceType, health }).pipe(
              Effect.map((r) => r.services.map((s) => s.serviceId)),
            );
          expect(yield* healthy(Health.EXPIRED)).toEqual([serviceId]);
          expect(yield* healthy(Health.HEALTHY)).toEqual([]);
          const beat = yield* call("heartbeat", { serviceId, version });
          expect(msOf(beat.leaseExpireTime)).toBeGreaterThan(Date.now());
          const renewed = yield* get(serviceId, version);
          expect(renewed).toMatchObject({ health: Health.HEALTHY, status: Status.READY });
          expect(yield* healthy(Health.HEALTHY)).toEqual([serviceId]);
          // A heartbeat is not a change: the revision stays.
          expect(renewed?.revision).toBe(3n);
        }),
      20_000,
    );

    it.effect("deregister removes the registration; NotFound afterwards", () =>
      Effect.gen(function* () {
        const serviceId = unique("svc-");
        yield* register({ serviceId, version: "1.0.0", serviceType: "importer" });
        yield* register({ serviceId, version: "2.0.0", serviceType: "importer" });
        yield* call("deregisterService", { serviceId, version: "2.0.0" });
        yield* failure(get(serviceId, "2.0.0"), "NotFound");
        expect((yield* get(serviceId))?.version).toBe("1.0.0");
        yield* failure(call("deregisterService", { serviceId, version: "2.0.0" }), "NotFound");
        yield* failure(call("heartbeat", { serviceId, version: "2.0.0" }), "NotFound");
        yield* call("deregisterService", { serviceId, version: "1.0.0" });
        yield* failure(get(serviceId), "NotFound");
        // Registering again starts over.
        const again = yield* register({ serviceId, version: "1.0.0", serviceType: "importer" });
        expect(again).toMatchObject({ created: true, service: { revision: 1n } });
      }),
    );

    it.effect("bad registrations → InvalidArgument naming the field", () =>
      Effect.gen(function* () {
        const serviceId = unique("svc-");
        const ok = { serviceId, version: "1.0.0", serviceType: "importer" };
        yield* invalid(register({ ...ok, version: "1.0" }), "service.version");
        yield* invalid(register({ ...ok, serviceId: "a:b" }), "service.service_id");
        yield* invalid(register({ ...ok, serviceId: "" }), "service.service_id");
        yield* invalid(register({ ...ok, serviceId: "a\u0000b" }), "service.service_id");
        yield* invalid(register({ ...ok, serviceType: "Importer" }), "service.service_type");
        yield* invalid(register({ ...ok, interfaceVersion: "two" }), "service.interface_version");
        yield* invalid(
          register({ ...ok, endpoints: Array.from({ length: 17 }, (_, i) => `h:${i}`) }),
          "service.endpoints",
        );
        yield* invalid(register(ok, 500), "lease_duration");
        yield* invalid(register(ok, 3_600_001), "lease_duration");
        yield* invalid(call("registerService", {}), "service");
        yield* invalid(get("a:b"), "service_id");
        yield* invalid(get(serviceId, "latest"), "version");
        yield* failure(get(serviceId), "NotFound"); // nothing was registered
      }),
    );
  });

// --- Watch streams -------------------------------------------------------------------

/** WatchServices as a stream of its events. */
const serviceEvents = (init: Request<"watchServices">) =>
  open("watchServices", init).pipe(Stream.filterMap((r) => Option.fromNullable(r.event)));

const watchTests = (it: It) =>
  describe("watch streams", () => {
    const register = (serviceId: string, serviceType: string, leaseSeconds = 30) =>
      call("registerService", {
        service: { serviceId, version: "1.0.0", serviceType },
        leaseDuration: { seconds: BigInt(leaseSeconds) },
      });

    it.effect(
      "services: snapshot, SNAPSHOT_COMPLETE, then registered / status / deregistered",
      () =>
        Effect.gen(function* () {
          const serviceType = unique("t");
          const before = unique("svc-");
          const after = unique("svc-");
          yield* register(before, serviceType);
          yield* register(unique("svc-"), unique("t")); // another type: filtered out
          const next = yield* watching(serviceEvents({ serviceType }), ServiceEvent.HEARTBEAT).pipe(
            Effect.map(
              (take) => () =>
                Effect.map(take(), (e) => [e?.type, e?.service?.serviceId, e?.service?.status]),
            ),
          );
          expect(yield* next()).toEqual([ServiceEvent.SNAPSHOT, before, Status.UNINITIALIZED]);
          expect(yield* next()).toEqual([ServiceEvent.SNAPSHOT_COMPLETE, undefined, undefined]);
          yield* register(after, serviceType);
          expect(yield* next()).toEqual([ServiceEvent.REGISTERED, after, Status.UNINITIALIZED]);
          yield* call("updateServiceStatus", {
            serviceId: after,
            version: "1.0.0",
            status: Status.INITIALIZED,
          });
          expect(yield* next()).toEqual([ServiceEvent.STATUS_CHANGED, after, Status.INITIALIZED]);
          yield* call("registerService", {
            service: { serviceId: after, version: "1.0.0", serviceType, endpoints: ["h:1"] },
          });
          expect(yield* next()).toEqual([ServiceEvent.UPDATED, after, Status.INITIALIZED]);
          yield* call("deregisterService", { serviceId: before, version: "1.0.0" });
          expect(yield* next()).toEqual([ServiceEvent.DEREGISTERED, before, Status.UNINITIALIZED]);
          // The same (id, version) registered again is a new registration.
          yield* register(before, serviceType);
          expect(yield* next()).toEqual([ServiceEvent.REGISTERED, before, Status.UNINITIALIZED]);
        }),
      30_000,
    );

    it.effect(
      "services: a lapsed lease is EXPIRED, a heartbeat after it RENEWED",
      () =>
        Effect.gen(function* () {
          const serviceType = unique("t");
          const serviceId = unique("svc-");
          const next = yield* watching(serviceEvents({ serviceType }), ServiceEvent.HEARTBEAT).pipe(
            Effect.map(
              (take) => () =>
                Effect.map(take(), (e) => [e?.type, e?.service?.serviceId, e?.service?.health]),
            ),
          );
          expect(yield* next()).toEqual([ServiceEvent.SNAPSHOT_COMPLETE, undefined, undefined]);
          yield* register(serviceId, serviceType, 1);
          expect(yield* next()).toEqual([ServiceEvent.REGISTERED, serviceId, Health.HEALTHY]);
          expect(yield* next()).toEqual([ServiceEvent.EXPIRED, serviceId, Health.EXPIRED]);
          yield* call("heartbeat", { serviceId, version: "1.0.0" });
          expect(yield* next()).toEqual([ServiceEvent.RENEWED, serviceId, Health.HEALTHY]);
          // Expires again when not renewed again.
          expect(yield* next()).toEqual([ServiceEvent.EXPIRED, serviceId, Health.EXPIRED]);
        }),
      30_000,
    );

    it.effect(
      "services: a watch for one service id sees only that service",
      () =>
        Effect.gen(function* () {
          const serviceType = unique("t");
          const mine = unique("svc-");
          const next = yield* watching(
            serviceEvents({ serviceId: mine }),
            ServiceEvent.HEARTBEAT,
          ).pipe(
            Effect.map((take) => () => Effect.map(take(), (e) => [e?.type, e?.service?.serviceId])),
          );
          expect(yield* next()).toEqual([ServiceEvent.SNAPSHOT_COMPLETE, undefined]);
          yield* register(unique("svc-"), serviceType);
          yield* register(mine, serviceType);
          expect(yield* next()).toEqual([ServiceEvent.REGISTERED, mine]);
        }),
      20_000,
    );

    it.effect("services: bad filters fail the stream with InvalidArgument", () =>
      Effect.gen(function* () {
        yield* invalid(
          Stream.runDrain(open("watchServices", { serviceType: "Bad Type" })),
          "service_type",
        );
        yield* invalid(Stream.runDrain(open("watchServices", { serviceId: "a:b" })), "service_id");
        yield* invalid(
          Stream.runDrain(open("watchParameters", { keyPrefix: "bad prefix" })),
          "key_prefix",
        );
      }),
    );

    it.effect(
      "parameters: snapshot, SNAPSHOT_COMPLETE, then SET and DELETED",
      () =>
        Effect.gen(function* () {
          const prefix = unique("w");
          const existing = `${prefix}.existing`;
          const added = `${prefix}.added`;
          const set = (key: string, value: JsonValue, scope = Scope.SYSTEM, scopeId = "") =>
            call("setParameter", { key, scope, scopeId, value: val(value) });
          yield* set(existing, 1);
          yield* set(unique("w"), "elsewhere");
          const next = yield* watching(
            open("watchParameters", { keyPrefix: prefix }),
            ParamEvent.HEARTBEAT,
          ).pipe(
            Effect.map(
              (take) => () =>
                Effect.map(take(), (e) => [
                  e.type,
                  e.parameter?.key,
                  jsonOf(e.parameter?.value),
                  e.parameter?.revision,
                ]),
            ),
          );
          expect(yield* next()).toEqual([ParamEvent.SNAPSHOT, existing, 1, 1n]);
          expect(yield* next()).toEqual([
            ParamEvent.SNAPSHOT_COMPLETE,
            undefined,
            undefined,
            undefined,
          ]);
          yield* set(added, "new", Scope.FLOW, "f1");
          expect(yield* next()).toEqual([ParamEvent.SET, added, "new", 1n]);
          yield* set(existing, 2);
          expect(yield* next()).toEqual([ParamEvent.SET, existing, 2, 2n]);
          yield* set(unique("w"), "not watched");
          yield* call("deleteParameter", { key: existing, scope: Scope.SYSTEM });
          const [type, key, value] = yield* next();
          expect([type, key, value]).toEqual([ParamEvent.DELETED, existing, 2]);
          yield* set(existing, 3);
          expect(yield* next()).toEqual([ParamEvent.SET, existing, 3, 4n]);
        }),
      30_000,
    );

    it.effect(
      "parameters: a watch of some keys at one scope sees only those",
      () =>
        Effect.gen(function* () {
          const prefix = unique("w");
          const [a, b] = [`${prefix}.a`, `${prefix}.b`];
          const next = yield* watching(
            open("watchParameters", { keys: [a], scope: Scope.FLOW, scopeId: "f1" }),
            ParamEvent.HEARTBEAT,
          ).pipe(
            Effect.map(
              (take) => () =>
                Effect.map(take(), (e) => [e.type, e.parameter?.key, e.parameter?.scopeId]),
            ),
          );
          expect(yield* next()).toEqual([ParamEvent.SNAPSHOT_COMPLETE, undefined, undefined]);
          const set = (key: string, scope: Scope, scopeId: string) =>
            call("setParameter", { key, scope, scopeId, value: val(true) });
          yield* set(b, Scope.FLOW, "f1");
          yield* set(a, Scope.FLOW, "f2");
          yield* set(a, Scope.SYSTEM, "");
          yield* set(a, Scope.FLOW, "f1");
          expect(yield* next()).toEqual([ParamEvent.SET, a, "f1"]);
        }),
      20_000,
    );
  });

// --- The suite --------------------------------------------------------------------------

/**
 * The DataStore conformance suite on a storage backend. `storage` is called
 * once per layer the suite builds (two): each call must give a usable store
 * (for the embedded backend, a fresh directory).
 */
export const dataStoreConformance = (
  name: string,
  storage: () => Layer.Layer<DocStore, unknown>,
): void => {
  describe(name, () => {
    // Live services: leases and watch polling run on the real clock.
    layer(dataStoreLayer(storage()), { excludeTestServices: true, timeout: "120 seconds" })(
      (it) => {
        entityTests(it);
        badInputTests(it);
        versionTests(it);
        parameterTests(it);
        registryTests(it);
        watchTests(it);
      },
    );
    layer(dataStoreLayer(storage(), 4096), { excludeTestServices: true, timeout: "120 seconds" })(
      "with a 4 KiB document limit",
      documentLimitTests,
    );
  });
};
