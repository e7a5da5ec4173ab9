/**
 * Configuration parameters: values keyed by (key, scope, scope id) with every
 * revision kept, definitions enforced on set and on resolve, resolution by
 * most specific scope, and a watch stream.
 *
 * Stored: `parameters` `{ _id: "key:SCOPE:scopeId", key, scope, scopeId, scopeKey, value, revision, … }`,
 * `parameter_history` `{ _id: "<parameter _id>:<revision>", paramId, revision, value, deleted, at }`,
 * `parameter_definitions` `{ _id: key, … }`.
 */
import { create } from "@bufbuild/protobuf";
import { Effect, Option, Stream } from "effect";
import type {
  DeleteParameterRequest,
  GetParameterHistoryRequest,
  GetParameterRequest,
  ListParametersRequest,
  ResolveParametersRequest,
  SetParameterRequest,
  WatchParametersRequest,
} from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { WatchParametersResponse_Type as EventType } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import {
  type Parameter,
  ParameterRevisionSchema,
  ParameterSchema,
  ParameterScope,
  ResolvedParameterSchema,
} from "../../gen/floworchestrator/datastore/v1/parameter_pb.js";
import { Aborted, FailedPrecondition, InvalidArgument, NotFound } from "../common/errors.js";
import * as V from "../common/validate.js";
import type { ChangeFeed } from "./changes.js";
import { jsonOf, now, pad, timestamp, toValue, unavailable } from "./common.js";
import { findPage } from "./paging.js";
import { checkValue, keyCheck, type Problem, type StoredDefinition } from "./parameter-rules.js";
import { type Collection, type Doc, eqIfSet, type Json, type Predicate } from "./store.js";
import { watch } from "./watch.js";

type ScopeName = "SYSTEM" | "SERVICE_TYPE" | "SERVICE_INSTANCE" | "FLOW" | "EXECUTION";
const scopeName = (s: ParameterScope) => ParameterScope[s] as ScopeName;
/** Least to most specific. */
const SPECIFICITY: ReadonlyArray<ScopeName> = [
  "SYSTEM",
  "SERVICE_TYPE",
  "SERVICE_INSTANCE",
  "FLOW",
  "EXECUTION",
];

const scopeChecks = (scope: ParameterScope, scopeId: string): V.Violations => {
  if (scope === ParameterScope.UNSPECIFIED) return [{ field: "scope", description: "is required" }];
  if (scope === ParameterScope.SYSTEM) {
    return scopeId === "" ? [] : [{ field: "scope_id", description: "must be empty for SYSTEM" }];
  }
  return scope === ParameterScope.SERVICE_TYPE
    ? V.typeName("scope_id", scopeId)
    : V.identifier("scope_id", scopeId);
};

const paramId = (key: string, scope: ScopeName, scopeId: string) => `${key}:${scope}:${scopeId}`;
/**
 * ListParameters order: key, then scope (least specific first), then scope id.
 * `\u0001` sorts below every key character, so `a` comes before `a.b` and `a0`
 * (which `_id`, with its `:` separator, would not give).
 */
const listOrder = (key: string, scope: ScopeName, scopeId: string) =>
  `${key}\u0001${SPECIFICITY.indexOf(scope)}\u0001${scopeId}`;
const scopeKey = (scope: ScopeName, scopeId: string) => `${scope}:${scopeId}`;

export const toParameter = (d: Doc): Parameter =>
  create(ParameterSchema, {
    key: d.key as string,
    scope: ParameterScope[d.scope as ScopeName],
    scopeId: d.scopeId as string,
    value: toValue(d.value as Json),
    revision: BigInt(d.revision as number),
    createTime: timestamp(d.createTime as number),
    updateTime: timestamp(d.updateTime as number),
  });

const configurationError = (make: "invalid" | "precondition", problems: ReadonlyArray<Problem>) => {
  const first = problems[0] as Problem;
  const message = problems.map((p) => `${p.key}: ${p.description}`).join("; ");
  const metadata = Object.fromEntries(problems.map((p) => [p.key, p.code]));
  return make === "invalid"
    ? new InvalidArgument({
        message: `invalid value: ${message}`,
        code: first.code,
        metadata,
        violations: problems.map((p) => ({ field: "value", description: p.description })),
      })
    : new FailedPrecondition({
        message: `configuration does not resolve: ${message}`,
        code: first.code,
        metadata,
      });
};

export const makeParameters = (
  parameters: Collection,
  history: Collection,
  definitions: Collection,
  feed: {
    readonly publish: (
      op: string,
      doc: Doc,
    ) => Effect.Effect<void, import("./store.js").StoreUnavailable>;
  },
) => {
  const definitionOf = (key: string) =>
    definitions.get(key).pipe(Effect.map(Option.map((d) => d as unknown as StoredDefinition)));

  const notFound = (key: string, scope: ScopeName, scopeId: string) =>
    new NotFound({
      message: `parameter "${key}" is not set at ${scope}${scopeId ? ` "${scopeId}"` : ""}`,
      metadata: { key, scope, scope_id: scopeId },
    });

  const conflict = (expected: bigint) =>
    new Aborted({
      message: `parameter is not at revision ${expected}`,
      metadata: { expected_revision: `${expected}` },
    });

  /** The highest revision ever written for a parameter (history survives deletes). */
  const lastRevision = (id: string) =>
    history
      .find({
        where: [{ path: "paramId", op: "eq", value: id }],
        sort: { path: "revision", descending: true },
        limit: 1,
      })
      .pipe(Effect.map(([d]) => (d?.revision as number | undefined) ?? 0));

  const setParameter = (req: SetParameterRequest) =>
    unavailable(
      Effect.gen(function* () {
        const value = jsonOf(req.value);
        yield* V.check(
          keyCheck("key", req.key),
          scopeChecks(req.scope, req.scopeId),
          value === undefined ? [{ field: "value", description: "is required" }] : [],
          V.document("value", value ?? null, 64 * 1024),
        );
        const definition = yield* definitionOf(req.key);
        if (Option.isSome(definition)) {
          const problem = checkValue(definition.value, value as Json);
          if (problem) return yield* Effect.fail(configurationError("invalid", [problem]));
        }
        const scope = scopeName(req.scope);
        const id = paramId(req.key, scope, req.scopeId);
        const at = yield* now;
        const current = yield* parameters.get(id);
        const currentRevision = Option.match(current, {
          onNone: () => 0,
          onSome: (d) => d.revision as number,
        });
        if (
          req.expectedRevision !== undefined &&
          BigInt(currentRevision) !== req.expectedRevision
        ) {
          return yield* Effect.fail(conflict(req.expectedRevision));
        }
        let written: Option.Option<Doc>;
        if (Option.isNone(current)) {
          const revision = (yield* lastRevision(id)) + 1;
          const doc: Doc = {
            _id: id,
            key: req.key,
            scope,
            scopeId: req.scopeId,
            scopeKey: scopeKey(scope, req.scopeId),
            order: listOrder(req.key, scope, req.scopeId),
            value: value as Json,
            revision,
            createTime: at,
            updateTime: at,
          };
          written = (yield* parameters.insert(doc)) ? Option.some(doc) : Option.none();
        } else {
          written = yield* parameters.update(
            id,
            { value: value as Json, revision: currentRevision + 1, updateTime: at },
            { path: "revision", value: currentRevision },
          );
        }
        if (Option.isNone(written)) {
          return yield* Effect.fail(
            new Aborted({
              message: `parameter "${req.key}" changed concurrently; read it and retry`,
            }),
          );
        }
        const doc = written.value;
        yield* history.insert({
          _id: `${id}:${pad(doc.revision as number)}`,
          paramId: id,
          revision: doc.revision as number,
          value: value as Json,
          deleted: false,
          at,
        });
        yield* feed.publish("put", doc);
        return { parameter: toParameter(doc) };
      }),
    );

  const load = (key: string, scope: ScopeName, scopeId: string) =>
    parameters.get(paramId(key, scope, scopeId)).pipe(
      Effect.flatMap(
        Option.match({
          onNone: () => Effect.fail(notFound(key, scope, scopeId)),
          onSome: Effect.succeed,
        }),
      ),
    );

  const getParameter = (req: GetParameterRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(keyCheck("key", req.key), scopeChecks(req.scope, req.scopeId));
        return { parameter: toParameter(yield* load(req.key, scopeName(req.scope), req.scopeId)) };
      }),
    );

  const listParameters = (req: ListParametersRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          req.keyPrefix === "" ? [] : keyCheck("key_prefix", req.keyPrefix),
          req.scope === ParameterScope.UNSPECIFIED
            ? req.scopeId === ""
              ? []
              : [{ field: "scope_id", description: "needs a scope" }]
            : req.scopeId === ""
              ? []
              : scopeChecks(req.scope, req.scopeId),
        );
        const size = yield* V.pageSize(req.pageSize);
        const where: Predicate[] = [
          ...(req.keyPrefix === ""
            ? []
            : [{ path: "key", op: "prefix", value: req.keyPrefix } as const]),
          ...(req.scope === ParameterScope.UNSPECIFIED
            ? []
            : [{ path: "scope", op: "eq", value: scopeName(req.scope) } as const]),
          ...eqIfSet("scopeId", req.scopeId),
        ];
        const sort = { path: "order", descending: false };
        const page = yield* findPage(
          parameters,
          { where, sort },
          { where, sort },
          size,
          req.pageToken,
        );
        return { parameters: page.docs.map(toParameter), nextPageToken: page.nextPageToken };
      }),
    );

  const deleteParameter = (req: DeleteParameterRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(keyCheck("key", req.key), scopeChecks(req.scope, req.scopeId));
        const scope = scopeName(req.scope);
        const current = yield* load(req.key, scope, req.scopeId);
        const revision = current.revision as number;
        if (req.expectedRevision !== undefined && BigInt(revision) !== req.expectedRevision) {
          return yield* Effect.fail(conflict(req.expectedRevision));
        }
        if (!(yield* parameters.remove(current._id, { path: "revision", value: revision }))) {
          return yield* Effect.fail(
            new Aborted({ message: `parameter "${req.key}" changed concurrently` }),
          );
        }
        const at = yield* now;
        yield* history.insert({
          _id: `${current._id}:${pad(revision + 1)}`,
          paramId: current._id,
          revision: revision + 1,
          value: null,
          deleted: true,
          at,
        });
        yield* feed.publish("delete", { ...current, revision: revision + 1, updateTime: at });
        return {};
      }),
    );

  const getParameterHistory = (req: GetParameterHistoryRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(keyCheck("key", req.key), scopeChecks(req.scope, req.scopeId));
        const size = yield* V.pageSize(req.pageSize);
        const id = paramId(req.key, scopeName(req.scope), req.scopeId);
        const where: Predicate[] = [{ path: "paramId", op: "eq", value: id }];
        const sort = { path: "revision", descending: true };
        const page = yield* findPage(
          history,
          { where, sort },
          { where, sort },
          size,
          req.pageToken,
        );
        if (page.docs.length === 0 && req.pageToken === "") {
          return yield* Effect.fail(notFound(req.key, scopeName(req.scope), req.scopeId));
        }
        return {
          revisions: page.docs.map((d) =>
            create(ParameterRevisionSchema, {
              revision: BigInt(d.revision as number),
              ...(d.deleted ? {} : { value: toValue(d.value as Json) }),
              deleted: d.deleted as boolean,
              updateTime: timestamp(d.at as number),
            }),
          ),
          nextPageToken: page.nextPageToken,
        };
      }),
    );

  const resolveParameters = (req: ResolveParametersRequest) =>
    unavailable(
      Effect.gen(function* () {
        const ctx = req.context;
        yield* V.check(
          V.maxItems("keys", req.keys, 1000),
          req.keys.flatMap((k, i) => keyCheck(`keys[${i}]`, k)),
          ctx?.serviceType ? V.typeName("context.service_type", ctx.serviceType) : [],
          ctx?.serviceId ? V.identifier("context.service_id", ctx.serviceId) : [],
          ctx?.flowId ? V.identifier("context.flow_id", ctx.flowId) : [],
          ctx?.executionId ? V.identifier("context.execution_id", ctx.executionId) : [],
        );
        const scopes: Array<[ScopeName, string]> = [["SYSTEM", ""]];
        if (ctx?.serviceType) scopes.push(["SERVICE_TYPE", ctx.serviceType]);
        if (ctx?.serviceId) scopes.push(["SERVICE_INSTANCE", ctx.serviceId]);
        if (ctx?.flowId) scopes.push(["FLOW", ctx.flowId]);
        if (ctx?.executionId) scopes.push(["EXECUTION", ctx.executionId]);
        const keyFilter: Predicate[] =
          req.keys.length > 0 ? [{ path: "key", op: "in", values: req.keys }] : [];
        const inContext = (byKey: ReadonlyArray<Predicate>) =>
          parameters.find({
            where: [
              { path: "scopeKey", op: "in", values: scopes.map(([s, id]) => scopeKey(s, id)) },
              ...byKey,
            ],
            limit: 100_000,
          });
        const definitionsOf = (byKey: ReadonlyArray<Predicate>) =>
          definitions
            .find({ where: byKey, limit: 100_000 })
            .pipe(Effect.map((docs) => docs as unknown as StoredDefinition[]));
        const values = [...(yield* inContext(keyFilter))];
        const defs = yield* definitionsOf(keyFilter);
        // The dependencies of the requested keys decide too, whether or not they were requested.
        const dependencies = [...new Set(defs.flatMap((d) => d.dependsOn))].filter(
          (k) => req.keys.length > 0 && !req.keys.includes(k),
        );
        if (dependencies.length > 0) {
          const only: Predicate[] = [{ path: "key", op: "in", values: dependencies }];
          values.push(...(yield* inContext(only)));
          defs.push(...(yield* definitionsOf(only)));
        }
        const defByKey = new Map(defs.map((d) => [d.key, d]));

        const best = new Map<string, Doc>();
        for (const d of values) {
          const prev = best.get(d.key as string);
          const rank = SPECIFICITY.indexOf(d.scope as ScopeName);
          if (!prev || rank > SPECIFICITY.indexOf(prev.scope as ScopeName))
            best.set(d.key as string, d);
        }
        const keys =
          req.keys.length > 0
            ? [...new Set(req.keys)]
            : [...new Set([...best.keys(), ...defByKey.keys()])];
        const problems: Problem[] = [];
        const resolved = keys.flatMap((key) => {
          const found = best.get(key);
          const def = defByKey.get(key);
          const value = found
            ? (found.value as Json)
            : def?.hasDefault
              ? def.defaultValue
              : undefined;
          if (value === undefined) {
            if (def?.required) {
              problems.push({
                key,
                code: "CONFIGURATION_ERROR.MISSING_PARAMETER",
                description: "is required and has no value",
              });
            }
            return [];
          }
          const problem = def ? checkValue(def, value) : undefined;
          if (problem) problems.push(problem);
          return [
            create(ResolvedParameterSchema, {
              key,
              value: toValue(value),
              sourceScope: found
                ? ParameterScope[found.scope as ScopeName]
                : ParameterScope.UNSPECIFIED,
              sourceScopeId: found ? (found.scopeId as string) : "",
              isDefault: !found,
              revision: BigInt(found ? (found.revision as number) : 0),
            }),
          ];
        });
        const present = new Set(resolved.map((r) => r.key));
        for (const r of resolved) {
          for (const dep of defByKey.get(r.key)?.dependsOn ?? []) {
            const depValue = best.get(dep) ?? (defByKey.get(dep)?.hasDefault ? true : undefined);
            if (!present.has(dep) && depValue === undefined) {
              problems.push({
                key: r.key,
                code: "CONFIGURATION_ERROR.MISSING_DEPENDENT_PARAMETER",
                description: `needs "${dep}", which has no value`,
              });
            }
          }
        }
        if (problems.length > 0)
          return yield* Effect.fail(configurationError("precondition", problems));
        return { parameters: resolved };
      }),
    );

  const watchParameters = (
    req: WatchParametersRequest,
  ): Stream.Stream<
    { type: EventType; parameter?: Parameter },
    InvalidArgument | import("../common/errors.js").Unavailable,
    ChangeFeed
  > => {
    const checks = [
      ...req.keys.flatMap((k, i) => keyCheck(`keys[${i}]`, k)),
      ...(req.keyPrefix === "" ? [] : keyCheck("key_prefix", req.keyPrefix)),
      ...(req.scopeId !== "" ? scopeChecks(req.scope, req.scopeId) : []),
    ];
    const keys = new Set(req.keys);
    const scope = req.scope === ParameterScope.UNSPECIFIED ? undefined : scopeName(req.scope);
    const matches = (d: Doc) =>
      (keys.size === 0 || keys.has(d.key as string)) &&
      (d.key as string).startsWith(req.keyPrefix) &&
      (scope === undefined || d.scope === scope) &&
      (req.scopeId === "" || d.scopeId === req.scopeId);
    const where: Predicate[] = [
      ...(keys.size > 0 ? [{ path: "key", op: "in", values: [...keys] } as const] : []),
      ...(req.keyPrefix === ""
        ? []
        : [{ path: "key", op: "prefix", value: req.keyPrefix } as const]),
      ...(scope === undefined ? [] : [{ path: "scope", op: "eq", value: scope } as const]),
      ...eqIfSet("scopeId", req.scopeId),
    ];
    const stream = watch<{ type: EventType; parameter?: Parameter }>({
      topic: "parameter",
      snapshot: parameters.find({ where, limit: 100_000 }),
      matches,
      id: (d) => d._id,
      isStale: (c, known) => (c.doc.revision as number) <= (known.revision as number),
      onSnapshot: (d) => ({ type: EventType.SNAPSHOT, parameter: toParameter(d) }),
      snapshotComplete: { type: EventType.SNAPSHOT_COMPLETE },
      onChange: (c) => ({
        type: c.op === "delete" ? EventType.DELETED : EventType.SET,
        parameter: toParameter(c.doc),
      }),
      heartbeat: { type: EventType.HEARTBEAT },
    });
    return Stream.unwrap(V.check(checks).pipe(Effect.as(stream))).pipe(
      Stream.catchTag("StoreUnavailable", (e) => Stream.fromEffect(unavailable(Effect.fail(e)))),
    );
  };

  return {
    setParameter,
    getParameter,
    listParameters,
    deleteParameter,
    getParameterHistory,
    resolveParameters,
    watchParameters,
  };
};
