/**
 * Version records: immutable semver versions of anything versioned, a
 * one-way status (ACTIVE → DEPRECATED → ARCHIVED) and declared compatibility
 * ranges. Ordering is semver precedence through `precedenceKey`, never string
 * order. Stored as `{ _id: "type:id:version", …, precedence, prerelease }`.
 */
import { create } from "@bufbuild/protobuf";
import { Effect, Option } from "effect";
import semver from "semver";
import type {
  CheckCompatibilityRequest,
  CreateVersionRequest,
  GetLatestVersionRequest,
  GetVersionRequest,
  ListVersionsRequest,
  UpdateVersionStatusRequest,
} from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import {
  type CompatibilityRequirement,
  CompatibilityRequirementSchema,
  type VersionRecord,
  VersionRecordSchema,
  VersionStatus,
} from "../../gen/floworchestrator/datastore/v1/version_pb.js";
import { Aborted, AlreadyExists, FailedPrecondition, NotFound } from "../common/errors.js";
import * as V from "../common/validate.js";
import { now, timestamp, unavailable } from "./common.js";
import { findPage } from "./paging.js";
import { precedenceKey } from "./precedence.js";
import type { Collection, Doc, Json, Predicate } from "./store.js";

type StatusName = "ACTIVE" | "DEPRECATED" | "ARCHIVED";
const statusName = (s: VersionStatus) => VersionStatus[s] as StatusName;

/** Allowed moves; staying put is allowed too (idempotent retries). */
const next: Record<StatusName, ReadonlyArray<StatusName>> = {
  ACTIVE: ["DEPRECATED", "ARCHIVED"],
  DEPRECATED: ["ARCHIVED"],
  ARCHIVED: [],
};

const key = (type: string, id: string, version: string) => `${type}:${id}:${version}`;

interface StoredRequirement {
  readonly entityType: string;
  readonly entityId: string;
  readonly range: string;
}

const toRecord = (d: Doc): VersionRecord =>
  create(VersionRecordSchema, {
    entityType: d.entityType as string,
    entityId: d.entityId as string,
    version: d.version as string,
    status: VersionStatus[d.status as StatusName],
    description: d.description as string,
    releaseNotes: d.releaseNotes as string,
    previousVersion: d.previousVersion as string,
    compatibility: (d.compatibility as unknown as StoredRequirement[]).map((r) =>
      create(CompatibilityRequirementSchema, r),
    ),
    revision: BigInt(d.revision as number),
    createTime: timestamp(d.createTime as number),
    updateTime: timestamp(d.updateTime as number),
  });

const requirementChecks = (reqs: ReadonlyArray<CompatibilityRequirement>) => [
  ...V.maxItems("version.compatibility", reqs, 64),
  ...reqs.flatMap((r, i) => [
    ...V.typeName(`version.compatibility[${i}].entity_type`, r.entityType),
    ...(r.entityId === "" ? [] : V.identifier(`version.compatibility[${i}].entity_id`, r.entityId)),
    ...V.semverRange(`version.compatibility[${i}].range`, r.range),
  ]),
];

const refChecks = (prefix: string, type: string, id: string, version: string) => [
  ...V.typeName(`${prefix}entity_type`, type),
  ...V.identifier(`${prefix}entity_id`, id),
  ...V.semverVersion(`${prefix}version`, version),
];

export const makeVersions = (versions: Collection) => {
  const load = (type: string, id: string, version: string) =>
    versions.get(key(type, id, version)).pipe(
      Effect.flatMap(
        Option.match({
          onNone: () =>
            Effect.fail(
              new NotFound({
                message: `version ${version} of ${type} "${id}" not found`,
                metadata: { entity_type: type, entity_id: id, version },
              }),
            ),
          onSome: Effect.succeed,
        }),
      ),
    );

  const createVersion = (req: CreateVersionRequest) =>
    unavailable(
      Effect.gen(function* () {
        const r = yield* V.required("version", req.version);
        yield* V.check(
          refChecks("version.", r.entityType, r.entityId, r.version),
          V.maxLength("version.description", r.description, 4096),
          V.maxLength("version.release_notes", r.releaseNotes, 65536),
          r.previousVersion === ""
            ? []
            : V.semverVersion("version.previous_version", r.previousVersion),
          r.previousVersion !== "" && r.previousVersion === r.version
            ? [{ field: "version.previous_version", description: "must differ from version" }]
            : [],
          requirementChecks(r.compatibility),
        );
        const at = yield* now;
        const compatibility: StoredRequirement[] = r.compatibility.map((c) => ({
          entityType: c.entityType,
          entityId: c.entityId,
          range: c.range,
        }));
        const doc: Doc = {
          _id: key(r.entityType, r.entityId, r.version),
          entityType: r.entityType,
          entityId: r.entityId,
          version: r.version,
          precedence: precedenceKey(r.version),
          prerelease: semver.prerelease(r.version) !== null,
          status: "ACTIVE",
          description: r.description,
          releaseNotes: r.releaseNotes,
          previousVersion: r.previousVersion,
          compatibility: compatibility as unknown as Json,
          revision: 1,
          createTime: at,
          updateTime: at,
        };
        if (yield* versions.insert(doc)) return { version: toRecord(doc) };
        const existing = yield* load(r.entityType, r.entityId, r.version);
        const same =
          existing.description === r.description &&
          existing.releaseNotes === r.releaseNotes &&
          existing.previousVersion === r.previousVersion &&
          JSON.stringify(existing.compatibility) === JSON.stringify(compatibility);
        if (same) return { version: toRecord(existing) };
        return yield* Effect.fail(
          new AlreadyExists({
            message: `version ${r.version} of ${r.entityType} "${r.entityId}" exists and is immutable`,
            metadata: { entity_type: r.entityType, entity_id: r.entityId, version: r.version },
          }),
        );
      }),
    );

  const getVersion = (req: GetVersionRequest) =>
    unavailable(
      V.check(refChecks("", req.entityType, req.entityId, req.version)).pipe(
        Effect.zipRight(load(req.entityType, req.entityId, req.version)),
        Effect.map((d) => ({ version: toRecord(d) })),
      ),
    );

  const ofEntity = (type: string, id: string): Predicate[] => [
    { path: "entityType", op: "eq", value: type },
    { path: "entityId", op: "eq", value: id },
  ];

  const listVersions = (req: ListVersionsRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          V.typeName("entity_type", req.entityType),
          V.identifier("entity_id", req.entityId),
        );
        const size = yield* V.pageSize(req.pageSize);
        const statuses = req.statuses
          .filter((s) => s !== VersionStatus.UNSPECIFIED)
          .map(statusName);
        const where: Predicate[] = [
          ...ofEntity(req.entityType, req.entityId),
          ...(statuses.length > 0 ? [{ path: "status", op: "in", values: statuses } as const] : []),
        ];
        const sort = { path: "precedence", descending: req.descending };
        const page = yield* findPage(
          versions,
          { where, sort },
          { where, sort },
          size,
          req.pageToken,
        );
        return { versions: page.docs.map(toRecord), nextPageToken: page.nextPageToken };
      }),
    );

  const getLatestVersion = (req: GetLatestVersionRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          V.typeName("entity_type", req.entityType),
          V.identifier("entity_id", req.entityId),
        );
        const where: Predicate[] = [
          ...ofEntity(req.entityType, req.entityId),
          {
            path: "status",
            op: "in",
            values: req.includeDeprecated ? ["ACTIVE", "DEPRECATED"] : ["ACTIVE"],
          },
          ...(req.includePrerelease
            ? []
            : [{ path: "prerelease", op: "eq", value: false } as const]),
        ];
        const [latest] = yield* versions.find({
          where,
          sort: { path: "precedence", descending: true },
          limit: 1,
        });
        if (latest === undefined) {
          return yield* Effect.fail(
            new NotFound({
              message: `${req.entityType} "${req.entityId}" has no ${req.includeDeprecated ? "active or deprecated" : "active"} version`,
              metadata: { entity_type: req.entityType, entity_id: req.entityId },
            }),
          );
        }
        return { version: toRecord(latest) };
      }),
    );

  const updateVersionStatus = (req: UpdateVersionStatusRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          refChecks("", req.entityType, req.entityId, req.version),
          req.status === VersionStatus.UNSPECIFIED
            ? [{ field: "status", description: "is required" }]
            : [],
        );
        const current = yield* load(req.entityType, req.entityId, req.version);
        const revision = current.revision as number;
        if (req.expectedRevision !== undefined && BigInt(revision) !== req.expectedRevision) {
          return yield* Effect.fail(
            new Aborted({ message: `version record is not at revision ${req.expectedRevision}` }),
          );
        }
        const from = current.status as StatusName;
        const to = statusName(req.status);
        if (from === to) return { version: toRecord(current) };
        if (!next[from].includes(to)) {
          return yield* Effect.fail(
            new FailedPrecondition({
              message: `version status ${from} cannot change to ${to} (only ACTIVE → DEPRECATED → ARCHIVED)`,
              code:
                from === "ARCHIVED"
                  ? "VERSION_ERROR.ARCHIVED_VERSION"
                  : "VERSION_ERROR.INVALID_TRANSITION",
              metadata: { from, to },
            }),
          );
        }
        const updated = yield* versions.update(
          current._id,
          { status: to, revision: revision + 1, updateTime: yield* now },
          { path: "revision", value: revision },
        );
        if (Option.isNone(updated)) {
          return yield* Effect.fail(
            new Aborted({ message: "the version record changed concurrently; read it again" }),
          );
        }
        return { version: toRecord(updated.value) };
      }),
    );

  const checkCompatibility = (req: CheckCompatibilityRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          refChecks(
            "dependent_",
            req.dependentEntityType,
            req.dependentEntityId,
            req.dependentVersion,
          ),
          refChecks(
            "candidate_",
            req.candidateEntityType,
            req.candidateEntityId,
            req.candidateVersion,
          ),
        );
        const dependent = toRecord(
          yield* load(req.dependentEntityType, req.dependentEntityId, req.dependentVersion),
        );
        const candidate = yield* versions.get(
          key(req.candidateEntityType, req.candidateEntityId, req.candidateVersion),
        );
        const candidateStatus = Option.match(candidate, {
          onNone: () => VersionStatus.UNSPECIFIED,
          onSome: (d) => VersionStatus[d.status as StatusName],
        });
        const requirements = dependent.compatibility.filter(
          (r) =>
            r.entityType === req.candidateEntityType &&
            (r.entityId === "" || r.entityId === req.candidateEntityId),
        );
        const failing = requirements.filter(
          (r) => !semver.satisfies(req.candidateVersion, r.range, { includePrerelease: true }),
        );
        const archived = candidateStatus === VersionStatus.ARCHIVED;
        const reason =
          failing.length > 0
            ? `${req.candidateVersion} does not satisfy ${failing.map((r) => `"${r.range}"`).join(", ")}`
            : archived
              ? `${req.candidateVersion} is archived`
              : requirements.length === 0
                ? `${req.dependentEntityType} "${req.dependentEntityId}" ${req.dependentVersion} declares no requirement for it`
                : `${req.candidateVersion} satisfies ${requirements.map((r) => `"${r.range}"`).join(", ")}`;
        return {
          compatible: failing.length === 0 && !archived,
          requirements,
          reason,
          candidateStatus,
        };
      }),
    );

  return {
    createVersion,
    getVersion,
    listVersions,
    getLatestVersion,
    updateVersionStatus,
    checkCompatibility,
  };
};
