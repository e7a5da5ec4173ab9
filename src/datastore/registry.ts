/**
 * The service registry: registrations keyed by (service id, implementation
 * version), the lifecycle of DOMAIN.md, leases renewed by heartbeats, and a
 * watch stream. A lapsed lease is reported (health EXPIRED, an EXPIRED event),
 * never hidden behind a READY status.
 *
 * Stored: `services` `{ _id: "serviceId:version", order, …, status, leaseMs, leaseExpireTime, revision }`;
 * `order` sorts by service id, then semver precedence.
 */
import { create, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { durationFromMs, durationMs } from "@bufbuild/protobuf/wkt";
import { Clock, Effect, Option, Schedule, Stream } from "effect";
import semver from "semver";
import type {
  DeregisterServiceRequest,
  GetServiceRequest,
  HeartbeatRequest,
  ListServicesRequest,
  RegisterServiceRequest,
  UpdateServiceStatusRequest,
  WatchServicesRequest,
} from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { ParameterDefinitionSchema } from "../../gen/floworchestrator/datastore/v1/parameter_pb.js";
import {
  ServiceEvent_Type as EventType,
  type ServiceEvent,
  ServiceEventSchema,
  ServiceHealth,
  type ServiceRecord,
  ServiceRecordSchema,
  ServiceStatus,
} from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
import {
  Aborted,
  FailedPrecondition,
  type InvalidArgument,
  NotFound,
  type Unavailable,
} from "../common/errors.js";
import * as V from "../common/validate.js";
import type { ChangeFeed } from "./changes.js";
import { now, timestamp, unavailable } from "./common.js";
import { findPage } from "./paging.js";
import { precedenceKey } from "./precedence.js";
import {
  type Collection,
  type Doc,
  eqIfSet,
  type Json,
  type Predicate,
  type StoreUnavailable,
} from "./store.js";
import { watch } from "./watch.js";

type StatusName = "UNINITIALIZED" | "INITIALIZED" | "READY" | "PROCESSING" | "ERROR" | "TERMINATED";
const statusName = (s: ServiceStatus) => ServiceStatus[s] as StatusName;

/** DOMAIN.md: UNINITIALIZED → INITIALIZED → READY ⇄ PROCESSING; any → ERROR → INITIALIZED; any → TERMINATED. */
const transitions: Record<StatusName, ReadonlyArray<StatusName>> = {
  UNINITIALIZED: ["INITIALIZED", "ERROR", "TERMINATED"],
  INITIALIZED: ["READY", "ERROR", "TERMINATED"],
  READY: ["PROCESSING", "ERROR", "TERMINATED"],
  PROCESSING: ["READY", "ERROR", "TERMINATED"],
  ERROR: ["INITIALIZED", "TERMINATED"],
  TERMINATED: [],
};

export const DEFAULT_LEASE_MS = 30_000;
const MIN_LEASE_MS = 1_000;
const MAX_LEASE_MS = 3_600_000;
/** How often a watch stream looks for lapsed leases. */
const EXPIRY_CHECK = "1 second";
const MAX_WRITE_ATTEMPTS = 8;

const key = (serviceId: string, version: string) => `${serviceId}:${version}`;

const toService = (d: Doc, at: number): ServiceRecord =>
  create(ServiceRecordSchema, {
    serviceId: d.serviceId as string,
    version: d.version as string,
    serviceType: d.serviceType as string,
    interfaceVersion: d.interfaceVersion as string,
    protocol: d.protocol as string,
    endpoints: d.endpoints as string[],
    capabilities: d.capabilities as string[],
    metadata: d.metadata as Record<string, string>,
    configurationSchema: (d.configurationSchema as JsonValue[]).map((j) =>
      fromJson(ParameterDefinitionSchema, j),
    ),
    status: ServiceStatus[d.status as StatusName],
    statusReason: d.statusReason as string,
    health: (d.leaseExpireTime as number) > at ? ServiceHealth.HEALTHY : ServiceHealth.EXPIRED,
    leaseDuration: durationFromMs(d.leaseMs as number),
    leaseExpireTime: timestamp(d.leaseExpireTime as number),
    revision: BigInt(d.revision as number),
    createTime: timestamp(d.createTime as number),
    updateTime: timestamp(d.updateTime as number),
  });

const refChecks = (serviceId: string, version: string) => [
  ...V.identifier("service_id", serviceId),
  ...V.semverVersion("version", version),
];

const notFound = (serviceId: string, version: string) =>
  new NotFound({
    message: `service "${serviceId}"${version ? ` version ${version}` : ""} is not registered`,
    metadata: { service_id: serviceId, ...(version ? { version } : {}) },
  });

export const makeRegistry = (
  services: Collection,
  feed: { readonly publish: (op: string, doc: Doc) => Effect.Effect<void, StoreUnavailable> },
) => {
  const load = (serviceId: string, version: string) =>
    services.get(key(serviceId, version)).pipe(
      Effect.flatMap(
        Option.match({
          onNone: () => Effect.fail(notFound(serviceId, version)),
          onSome: Effect.succeed,
        }),
      ),
    );

  const registerService = (req: RegisterServiceRequest) =>
    unavailable(
      Effect.gen(function* () {
        const s = yield* V.required("service", req.service);
        const leaseMs = req.leaseDuration ? durationMs(req.leaseDuration) : DEFAULT_LEASE_MS;
        yield* V.check(
          V.identifier("service.service_id", s.serviceId),
          V.semverVersion("service.version", s.version),
          V.typeName("service.service_type", s.serviceType),
          s.interfaceVersion === ""
            ? []
            : V.semverVersion("service.interface_version", s.interfaceVersion),
          V.maxLength("service.protocol", s.protocol, 63),
          V.maxItems("service.endpoints", s.endpoints, 16),
          s.endpoints.flatMap((e, i) => V.maxLength(`service.endpoints[${i}]`, e, 1024)),
          V.maxItems("service.capabilities", s.capabilities, 64),
          s.capabilities.flatMap((c, i) => V.maxLength(`service.capabilities[${i}]`, c, 256)),
          V.maxItems("service.metadata", Object.keys(s.metadata), 64),
          Object.entries(s.metadata).flatMap(([k, v]) => [
            ...V.maxLength(`service.metadata[${JSON.stringify(k)}]`, k, 63),
            ...V.maxLength(`service.metadata[${JSON.stringify(k)}]`, v, 1024),
          ]),
          V.maxItems("service.configuration_schema", s.configurationSchema, 256),
          leaseMs < MIN_LEASE_MS || leaseMs > MAX_LEASE_MS
            ? [{ field: "lease_duration", description: "must be between 1 s and 1 h" }]
            : [],
        );
        const fields = {
          serviceType: s.serviceType,
          interfaceVersion: s.interfaceVersion,
          protocol: s.protocol,
          endpoints: s.endpoints,
          capabilities: s.capabilities,
          metadata: s.metadata,
          configurationSchema: s.configurationSchema.map(
            (d) => toJson(ParameterDefinitionSchema, d) as Json,
          ),
        };
        for (let attempt = 1; ; attempt++) {
          const at = yield* now;
          const existing = yield* services.get(key(s.serviceId, s.version));
          if (Option.isNone(existing)) {
            const doc: Doc = {
              _id: key(s.serviceId, s.version),
              serviceId: s.serviceId,
              version: s.version,
              order: `${s.serviceId}\u0001${precedenceKey(s.version)}`,
              ...fields,
              status: "UNINITIALIZED",
              statusReason: "registered",
              leaseMs,
              leaseExpireTime: at + leaseMs,
              revision: 1,
              createTime: at,
              updateTime: at,
            };
            if (yield* services.insert(doc)) {
              yield* feed.publish("registered", doc);
              return { service: toService(doc, at), created: true };
            }
          } else {
            const current = existing.value;
            const changed = Object.entries(fields).some(
              ([k, v]) => JSON.stringify(current[k]) !== JSON.stringify(v),
            );
            const schemaChanged =
              JSON.stringify(current.configurationSchema) !==
              JSON.stringify(fields.configurationSchema);
            // A configuration change requires re-initialisation (DOMAIN.md), as does coming back from TERMINATED.
            const reset = schemaChanged || current.status === "TERMINATED";
            const revision = current.revision as number;
            const update: Record<string, Json> = { leaseMs, leaseExpireTime: at + leaseMs };
            if (changed || reset || leaseMs !== current.leaseMs) {
              Object.assign(update, fields, { revision: revision + 1, updateTime: at });
              if (reset)
                Object.assign(update, {
                  status: "UNINITIALIZED",
                  statusReason: "re-registered with a new configuration",
                });
            }
            const written = yield* services.update(current._id, update, {
              path: "revision",
              value: revision,
            });
            if (Option.isSome(written)) {
              if (update.revision !== undefined) yield* feed.publish("updated", written.value);
              else if ((current.leaseExpireTime as number) <= at)
                yield* feed.publish("renewed", written.value);
              return { service: toService(written.value, at), created: false };
            }
          }
          if (attempt >= MAX_WRITE_ATTEMPTS) {
            return yield* Effect.fail(
              new Aborted({ message: "the registration changed concurrently; retry" }),
            );
          }
        }
      }),
    );

  const getService = (req: GetServiceRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          V.identifier("service_id", req.serviceId),
          req.version === "" ? [] : V.semverVersion("version", req.version),
        );
        const at = yield* now;
        if (req.version !== "")
          return { service: toService(yield* load(req.serviceId, req.version), at) };
        const [latest] = yield* services.find({
          where: [{ path: "serviceId", op: "eq", value: req.serviceId }],
          sort: { path: "order", descending: true },
          limit: 1,
        });
        if (latest === undefined) return yield* Effect.fail(notFound(req.serviceId, ""));
        return { service: toService(latest, at) };
      }),
    );

  const listServices = (req: ListServicesRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          req.serviceType === "" ? [] : V.typeName("service_type", req.serviceType),
          req.serviceId === "" ? [] : V.identifier("service_id", req.serviceId),
          req.versionRange === "" ? [] : V.semverRange("version_range", req.versionRange),
        );
        const size = yield* V.pageSize(req.pageSize);
        const at = yield* now;
        const where: Predicate[] = [
          ...eqIfSet("serviceType", req.serviceType),
          ...eqIfSet("serviceId", req.serviceId),
          ...(req.status === ServiceStatus.UNSPECIFIED
            ? []
            : [{ path: "status", op: "eq", value: statusName(req.status) } as const]),
        ];
        // Health depends on the clock, so it is checked per page rather than in the token's query.
        const healthy = (d: Doc) => (d.leaseExpireTime as number) > at;
        const accept = (d: Doc) =>
          (req.health === ServiceHealth.UNSPECIFIED ||
            healthy(d) === (req.health === ServiceHealth.HEALTHY)) &&
          (req.versionRange === "" ||
            semver.satisfies(d.version as string, req.versionRange, { includePrerelease: true }));
        const sort = { path: "order", descending: false };
        const identity = { where, health: req.health, range: req.versionRange };
        const page = yield* findPage(
          services,
          { where, sort },
          identity,
          size,
          req.pageToken,
          accept,
        );
        return {
          services: page.docs.map((d) => toService(d, at)),
          nextPageToken: page.nextPageToken,
        };
      }),
    );

  const updateServiceStatus = (req: UpdateServiceStatusRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          refChecks(req.serviceId, req.version),
          req.status === ServiceStatus.UNSPECIFIED
            ? [{ field: "status", description: "is required" }]
            : [],
          V.maxLength("reason", req.reason, 1024),
        );
        const to = statusName(req.status);
        for (let attempt = 1; ; attempt++) {
          const current = yield* load(req.serviceId, req.version);
          const revision = current.revision as number;
          if (req.expectedRevision !== undefined && BigInt(revision) !== req.expectedRevision) {
            return yield* Effect.fail(
              new Aborted({ message: `registration is not at revision ${req.expectedRevision}` }),
            );
          }
          const from = current.status as StatusName;
          const at = yield* now;
          if (from === to) return { service: toService(current, at) };
          if (!transitions[from].includes(to)) {
            return yield* Effect.fail(
              new FailedPrecondition({
                message: `service status ${from} cannot change to ${to}`,
                code: "PROCESSING_ERROR.INVALID_STATE_TRANSITION",
                metadata: { from, to, allowed: transitions[from].join(",") },
              }),
            );
          }
          const written = yield* services.update(
            current._id,
            { status: to, statusReason: req.reason, revision: revision + 1, updateTime: at },
            { path: "revision", value: revision },
          );
          if (Option.isSome(written)) {
            yield* feed.publish("status", written.value);
            return { service: toService(written.value, at) };
          }
          if (req.expectedRevision !== undefined || attempt >= MAX_WRITE_ATTEMPTS) {
            return yield* Effect.fail(
              new Aborted({ message: "the registration changed concurrently; read it again" }),
            );
          }
        }
      }),
    );

  const heartbeat = (req: HeartbeatRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(refChecks(req.serviceId, req.version));
        const current = yield* load(req.serviceId, req.version);
        if (current.status === "TERMINATED") {
          return yield* Effect.fail(
            new FailedPrecondition({
              message: "a TERMINATED service cannot heartbeat; register it again",
            }),
          );
        }
        const at = yield* now;
        const expire = at + (current.leaseMs as number);
        const written = yield* services.update(current._id, { leaseExpireTime: expire });
        if (Option.isNone(written)) return yield* Effect.fail(notFound(req.serviceId, req.version));
        if ((current.leaseExpireTime as number) <= at)
          yield* feed.publish("renewed", written.value);
        return { leaseExpireTime: timestamp(expire) };
      }),
    );

  const deregisterService = (req: DeregisterServiceRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(refChecks(req.serviceId, req.version));
        const current = yield* load(req.serviceId, req.version);
        if (!(yield* services.remove(current._id)))
          return yield* Effect.fail(notFound(req.serviceId, req.version));
        yield* feed.publish("deregistered", {
          ...current,
          revision: (current.revision as number) + 1,
        });
        return {};
      }),
    );

  const eventTypes: Record<string, EventType> = {
    registered: EventType.REGISTERED,
    updated: EventType.UPDATED,
    status: EventType.STATUS_CHANGED,
    renewed: EventType.RENEWED,
    deregistered: EventType.DEREGISTERED,
  };

  /** Marks a known record whose EXPIRED event was sent; a newer write replaces the record and clears it. */
  const EXPIRED = "__expiredSent";

  const watchServices = (
    req: WatchServicesRequest,
  ): Stream.Stream<ServiceEvent, InvalidArgument | Unavailable, ChangeFeed> => {
    const where: Predicate[] = [
      ...eqIfSet("serviceType", req.serviceType),
      ...eqIfSet("serviceId", req.serviceId),
    ];
    const event = (type: EventType, d: Doc | undefined, at: number) =>
      create(ServiceEventSchema, { type, ...(d ? { service: toService(d, at) } : {}) });

    const expiries = (known: Map<string, Doc>) => {
      const check = Effect.gen(function* () {
        const at = yield* Clock.currentTimeMillis;
        const lapsed = [...known.values()].filter(
          (d) => d[EXPIRED] !== true && (d.leaseExpireTime as number) <= at,
        );
        const events: ServiceEvent[] = [];
        for (const d of lapsed) {
          // Heartbeats do not go through the feed: read the lease before calling it expired.
          const fresh = yield* services.get(d._id);
          if (Option.isNone(fresh)) continue;
          if ((fresh.value.leaseExpireTime as number) > at) {
            known.set(d._id, fresh.value);
          } else {
            known.set(d._id, { ...fresh.value, [EXPIRED]: true });
            events.push(event(EventType.EXPIRED, fresh.value, at));
          }
        }
        return events;
      });
      return Stream.fromSchedule(Schedule.spaced(EXPIRY_CHECK)).pipe(
        Stream.mapEffect(() => check),
        Stream.flattenIterables,
      );
    };

    const stream = Stream.unwrap(
      Effect.map(Clock.currentTimeMillis, (start) =>
        watch<ServiceEvent>({
          topic: "service",
          snapshot: services
            .find({ where, sort: { path: "order", descending: false }, limit: 100_000 })
            .pipe(
              // Already lapsed at snapshot time: the snapshot says EXPIRED, no separate event.
              Effect.map((docs) =>
                docs.map((d) =>
                  (d.leaseExpireTime as number) <= start ? { ...d, [EXPIRED]: true } : d,
                ),
              ),
            ),
          matches: (d) =>
            (req.serviceType === "" || d.serviceType === req.serviceType) &&
            (req.serviceId === "" || d.serviceId === req.serviceId),
          id: (d) => d._id,
          isStale: (c, known) =>
            c.op !== "renewed" && (c.doc.revision as number) <= (known.revision as number),
          // Forget a deregistered service: registering it again starts over at revision 1.
          removes: (c) => c.op === "deregistered",
          onSnapshot: (d) => event(EventType.SNAPSHOT, d, start),
          snapshotComplete: event(EventType.SNAPSHOT_COMPLETE, undefined, start),
          // Synchronous callback: the wall clock decides the health shown with a change.
          onChange: (c) => event(eventTypes[c.op] ?? EventType.UPDATED, c.doc, Date.now()),
          heartbeat: event(EventType.HEARTBEAT, undefined, start),
          ticks: expiries,
        }),
      ),
    );
    const checks = V.check(
      req.serviceType === "" ? [] : V.typeName("service_type", req.serviceType),
      req.serviceId === "" ? [] : V.identifier("service_id", req.serviceId),
    );
    return Stream.unwrap(checks.pipe(Effect.as(stream))).pipe(
      Stream.catchTag("StoreUnavailable", (e) => Stream.fromEffect(unavailable(Effect.fail(e)))),
    );
  };

  return {
    registerService,
    getService,
    listServices,
    updateServiceStatus,
    heartbeat,
    deregisterService,
    watchServices,
  };
};
