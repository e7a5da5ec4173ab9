/**
 * Entities: the generic document repository. Stored as
 * `{ _id: "kind:id", kind, id, doc, labels, labelPairs, version, createTime, updateTime }`;
 * `labelPairs` (`"key=value"` strings) makes label selection an indexed
 * array match.
 */
import { randomUUID } from "node:crypto";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { Effect, Option } from "effect";
import type {
  BatchGetEntitiesRequest,
  CreateEntityRequest,
  DeleteEntityRequest,
  GetEntityRequest,
  ListEntitiesRequest,
  UpdateEntityRequest,
} from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import {
  type Entity,
  EntitySchema,
  type FieldFilter,
  FieldFilter_Operator as Op,
} from "../../gen/floworchestrator/datastore/v1/entity_pb.js";
import { Aborted, AlreadyExists, NotFound } from "../common/errors.js";
import * as V from "../common/validate.js";
import { jsonOf, now, timestamp, unavailable } from "./common.js";
import { findPage } from "./paging.js";
import type { Collection, Doc, Json, Predicate, Scalar, Sort } from "./store.js";

export interface EntityLimits {
  readonly maxDocumentBytes: number;
}

const MAX_FILTERS = 32;
const MAX_IN_VALUES = 100;
const MAX_BATCH = 1000;
/** Read-modify-write retries of an update without an expected version before giving up. */
const MAX_UPDATE_ATTEMPTS = 8;

const key = (kind: string, id: string) => `${kind}:${id}`;
const labelPairs = (labels: Readonly<Record<string, string>>) =>
  Object.entries(labels).map(([k, v]) => `${k}=${v}`);

export const toEntity = (d: Doc): Entity =>
  create(EntitySchema, {
    kind: d.kind as string,
    id: d.id as string,
    document: d.doc as JsonObject,
    labels: d.labels as Record<string, string>,
    version: BigInt(d.version as number),
    createTime: timestamp(d.createTime as number),
    updateTime: timestamp(d.updateTime as number),
  });

const sameBody = (d: Doc, document: JsonObject, labels: Readonly<Record<string, string>>) =>
  JSON.stringify(canonical(d.doc as Json)) === JSON.stringify(canonical(document)) &&
  JSON.stringify(canonical(d.labels as Json)) === JSON.stringify(canonical(labels as Json));

/** Key order does not make two documents different. */
const canonical = (value: Json): Json =>
  Array.isArray(value)
    ? value.map(canonical)
    : value !== null && typeof value === "object"
      ? Object.fromEntries(
          Object.keys(value)
            .sort()
            .map((k) => [k, canonical(value[k] as Json)]),
        )
      : value;

const scalar = (field: string, v: Json | undefined): V.Violations =>
  v === undefined
    ? [{ field, description: "is required" }]
    : v !== null && typeof v === "object"
      ? [{ field, description: "must be a number, string, boolean or null" }]
      : [];

const filterViolations = (filters: ReadonlyArray<FieldFilter>): V.Violations => [
  ...V.maxItems("filters", filters, MAX_FILTERS),
  ...filters.flatMap((f, i) => {
    const at = `filters[${i}]`;
    const base = V.fieldPath(`${at}.field`, f.field);
    if (f.operator === Op.UNSPECIFIED)
      return [...base, { field: `${at}.operator`, description: "is required" }];
    if (f.operator === Op.IN) {
      return [
        ...base,
        ...V.maxItems(`${at}.values`, f.values, MAX_IN_VALUES),
        ...f.values.flatMap((v, j) => scalar(`${at}.values[${j}]`, jsonOf(v))),
      ];
    }
    return [...base, ...scalar(`${at}.value`, jsonOf(f.value))];
  }),
];

const opNames = {
  [Op.EQUAL]: "eq",
  [Op.NOT_EQUAL]: "ne",
  [Op.LESS_THAN]: "lt",
  [Op.LESS_THAN_OR_EQUAL]: "lte",
  [Op.GREATER_THAN]: "gt",
  [Op.GREATER_THAN_OR_EQUAL]: "gte",
} as const;

const toPredicate = (f: FieldFilter): Predicate =>
  f.operator === Op.IN
    ? { path: `doc.${f.field}`, op: "in", values: f.values.map((v) => jsonOf(v) as Scalar) }
    : {
        path: `doc.${f.field}`,
        op: opNames[f.operator as keyof typeof opNames],
        value: jsonOf(f.value) as Scalar,
      };

const sortFor = (orderBy: string, descending: boolean): Sort | V.Violations => {
  const system: Record<string, string> = {
    "": "_id",
    id: "_id",
    create_time: "createTime",
    update_time: "updateTime",
  };
  const path = system[orderBy];
  if (path !== undefined) return { path, descending };
  if (orderBy.startsWith("document.")) {
    const field = orderBy.slice("document.".length);
    const bad = V.fieldPath("order_by", field);
    return bad.length > 0 ? bad : { path: `doc.${field}`, descending };
  }
  return [
    { field: "order_by", description: "must be id, create_time, update_time or document.<path>" },
  ];
};

const notFound = (kind: string, id: string) =>
  new NotFound({ message: `${kind} "${id}" not found`, metadata: { kind, id } });

const versionMismatch = (kind: string, id: string, expected: bigint) =>
  new Aborted({
    message: `${kind} "${id}" is not at version ${expected}`,
    metadata: { kind, id, expected_version: expected.toString() },
  });

/** Applies an update mask to a document: `a.b` copies that field from `source` (or removes it). */
const applyMask = (
  current: JsonObject,
  source: JsonObject,
  paths: ReadonlyArray<string>,
): JsonObject => {
  const next = structuredClone(current) as JsonObject;
  for (const path of paths) {
    const segments = path.split(".");
    let from: Json | undefined = source;
    let to: JsonObject = next;
    for (const [i, seg] of segments.entries()) {
      const last = i === segments.length - 1;
      from =
        from !== null && typeof from === "object" && !Array.isArray(from) ? from[seg] : undefined;
      if (last) {
        if (from === undefined) delete to[seg];
        else to[seg] = structuredClone(from);
      } else {
        const child = to[seg];
        if (child === null || typeof child !== "object" || Array.isArray(child)) to[seg] = {};
        to = to[seg] as JsonObject;
      }
    }
  }
  return next;
};

export const makeEntities = (entities: Collection, limits: EntityLimits) => {
  const idChecks = (kind: string, id: string) => [
    ...V.typeName("kind", kind),
    ...V.identifier("id", id),
  ];
  const bodyChecks = (document: JsonObject | undefined, labels: Record<string, string>) => [
    ...(document === undefined ? [{ field: "document", description: "is required" }] : []),
    ...V.document("document", document ?? {}, limits.maxDocumentBytes),
    ...V.labels("labels", labels),
  ];

  const load = (kind: string, id: string) =>
    entities
      .get(key(kind, id))
      .pipe(
        Effect.flatMap(
          Option.match({ onNone: () => Effect.fail(notFound(kind, id)), onSome: Effect.succeed }),
        ),
      );

  const createEntity = (req: CreateEntityRequest) =>
    unavailable(
      Effect.gen(function* () {
        const id = req.id === "" ? randomUUID() : req.id;
        yield* V.check(idChecks(req.kind, id), bodyChecks(req.document, req.labels));
        const document = req.document ?? {};
        const at = yield* now;
        const doc: Doc = {
          _id: key(req.kind, id),
          kind: req.kind,
          id,
          doc: document,
          labels: req.labels,
          labelPairs: labelPairs(req.labels),
          version: 1,
          createTime: at,
          updateTime: at,
        };
        if (yield* entities.insert(doc)) return { entity: toEntity(doc) };
        // A retry of the same create is not an error; a different body under the id is.
        const existing = yield* load(req.kind, id);
        if (sameBody(existing, document, req.labels)) return { entity: toEntity(existing) };
        return yield* Effect.fail(
          new AlreadyExists({
            message: `${req.kind} "${id}" already exists with a different body`,
            metadata: { kind: req.kind, id },
          }),
        );
      }),
    );

  const getEntity = (req: GetEntityRequest) =>
    unavailable(
      V.check(idChecks(req.kind, req.id)).pipe(
        Effect.zipRight(load(req.kind, req.id)),
        Effect.map((d) => ({ entity: toEntity(d) })),
      ),
    );

  const updateEntity = (req: UpdateEntityRequest) =>
    unavailable(
      Effect.gen(function* () {
        const paths = req.updateMask?.paths ?? [];
        const maskChecks = paths.flatMap((p, i) =>
          p === "document" || p === "labels"
            ? []
            : p.startsWith("document.")
              ? V.fieldPath(`update_mask.paths[${i}]`, p.slice("document.".length))
              : [
                  {
                    field: `update_mask.paths[${i}]`,
                    description: "must be document, document.<path> or labels",
                  },
                ],
        );
        const replacesDocument = paths.length === 0 || paths.includes("document");
        yield* V.check(
          idChecks(req.kind, req.id),
          maskChecks,
          replacesDocument && req.document === undefined
            ? [{ field: "document", description: "is required" }]
            : [],
          V.labels("labels", req.labels),
        );
        for (let attempt = 1; ; attempt++) {
          const current = yield* load(req.kind, req.id);
          const version = current.version as number;
          if (req.expectedVersion !== undefined && BigInt(version) !== req.expectedVersion) {
            return yield* Effect.fail(versionMismatch(req.kind, req.id, req.expectedVersion));
          }
          const fieldPaths = paths.filter((p) => p.startsWith("document.")).map((p) => p.slice(9));
          const document = replacesDocument
            ? (req.document ?? {})
            : applyMask(current.doc as JsonObject, req.document ?? {}, fieldPaths);
          const labels =
            paths.length === 0 || paths.includes("labels")
              ? req.labels
              : (current.labels as Record<string, string>);
          yield* V.check(V.document("document", document, limits.maxDocumentBytes));
          const updated = yield* entities.update(
            current._id,
            {
              doc: document,
              labels,
              labelPairs: labelPairs(labels),
              version: version + 1,
              updateTime: yield* now,
            },
            { path: "version", value: version },
          );
          if (Option.isSome(updated)) return { entity: toEntity(updated.value) };
          // Someone else wrote in between: with an expected version that is the caller's
          // conflict; without one, read again and re-apply (last write wins, no lost fields).
          if (req.expectedVersion !== undefined || attempt >= MAX_UPDATE_ATTEMPTS) {
            return yield* Effect.fail(
              versionMismatch(req.kind, req.id, req.expectedVersion ?? BigInt(version)),
            );
          }
        }
      }),
    );

  const deleteEntity = (req: DeleteEntityRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(idChecks(req.kind, req.id));
        const expected = req.expectedVersion;
        const condition =
          expected === undefined ? undefined : { path: "version", value: Number(expected) };
        if (yield* entities.remove(key(req.kind, req.id), condition)) return {};
        yield* load(req.kind, req.id); // NotFound when it is not there at all
        return yield* Effect.fail(versionMismatch(req.kind, req.id, expected ?? 0n));
      }),
    );

  const listEntities = (req: ListEntitiesRequest) =>
    unavailable(
      Effect.gen(function* () {
        const sort = sortFor(req.orderBy, req.descending);
        yield* V.check(
          V.typeName("kind", req.kind),
          V.labels("label_selector", req.labelSelector),
          filterViolations(req.filters),
          Array.isArray(sort) ? sort : [],
        );
        const size = yield* V.pageSize(req.pageSize);
        const where: Predicate[] = [
          { path: "kind", op: "eq", value: req.kind },
          ...labelPairs(req.labelSelector).map(
            (pair): Predicate => ({ path: "labelPairs", op: "eq", value: pair }),
          ),
          ...req.filters.map(toPredicate),
        ];
        const identity = { kind: req.kind, where, sort };
        const page = yield* findPage(
          entities,
          { where, sort: sort as Sort },
          identity,
          size,
          req.pageToken,
        );
        return { entities: page.docs.map(toEntity), nextPageToken: page.nextPageToken };
      }),
    );

  const batchGetEntities = (req: BatchGetEntitiesRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          V.typeName("kind", req.kind),
          V.maxItems("ids", req.ids, MAX_BATCH),
          req.ids.flatMap((id, i) => V.identifier(`ids[${i}]`, id)),
        );
        const found = yield* entities.getMany(req.ids.map((id) => key(req.kind, id)));
        const byId = new Map(found.map((d) => [d.id as string, d]));
        return {
          entities: req.ids.flatMap((id) => {
            const d = byId.get(id);
            return d ? [toEntity(d)] : [];
          }),
          missingIds: req.ids.filter((id) => !byId.has(id)),
        };
      }),
    );

  return { createEntity, getEntity, updateEntity, deleteEntity, listEntities, batchGetEntities };
};
