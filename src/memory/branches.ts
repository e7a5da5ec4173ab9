/**
 * Branches of an execution: their lifecycle (NEW → IN_PROGRESS → COMPLETED |
 * FAILED), cleanup of a branch's memory when it ends (unless a merge still
 * needs it), and merges that promote source outputs into a target branch.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Effect, FiberRef, Option } from "effect";
import {
  type Branch,
  BranchSchema,
  BranchStatus,
  MergeStrategy,
} from "../../gen/floworchestrator/memory/v1/branch_pb.js";
import type {
  CreateBranchRequest,
  GetBranchRequest,
  ListBranchesRequest,
  MergeBranchesRequest,
  UpdateBranchStatusRequest,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { CurrentPrincipal } from "../common/caller.js";
import {
  Aborted,
  AlreadyExists,
  FailedPrecondition,
  NotFound,
  PermissionDenied,
} from "../common/errors.js";
import type { Json } from "../common/json.js";
import { decodePageToken, encodePageToken } from "../common/page-token.js";
import * as V from "../common/validate.js";
import { type Address, branchPathViolations, formatAddress, parentOf } from "./address.js";
import { unavailable } from "./common.js";
import type { makeMemory } from "./memory.js";
import type { BranchRecord, MemoryRecord, MemoryStoreShape, StoreUnavailable } from "./store.js";

type StatusName = "NEW" | "IN_PROGRESS" | "COMPLETED" | "FAILED";
const statusName = (s: BranchStatus) => BranchStatus[s] as StatusName;

const transitions: Record<StatusName, ReadonlyArray<StatusName>> = {
  NEW: ["IN_PROGRESS", "FAILED"],
  IN_PROGRESS: ["COMPLETED", "FAILED"],
  COMPLETED: [],
  FAILED: [],
};
const ended = (s: string) => s === "COMPLETED" || s === "FAILED";
const MAX_SOURCES = 64;

const toBranch = (b: BranchRecord): Branch =>
  create(BranchSchema, {
    executionId: b.executionId,
    branchPath: b.branchPath,
    parentPath: b.parentPath,
    status: BranchStatus[b.status as StatusName],
    retainForMerge: b.retainForMerge,
    owner: b.owner ?? "",
    createTime: timestampFromMs(b.createTime),
    updateTime: timestampFromMs(b.updateTime),
  });

const notFound = (executionId: string, branchPath: string) =>
  new NotFound({
    message: `branch ${branchPath} of execution ${executionId} does not exist`,
    metadata: { execution_id: executionId, branch_path: branchPath },
  });

/** Fails when a branch that exists has ended: it accepts no more writes. Unknown branches are not tracked. */
export const branchAcceptsWrites =
  (store: MemoryStoreShape) =>
  (
    executionId: string,
    branchPath: string,
  ): Effect.Effect<void, FailedPrecondition | StoreUnavailable> =>
    store.branches.get(executionId, branchPath).pipe(
      Effect.flatMap((b) =>
        Option.isSome(b) && ended(b.value.status)
          ? Effect.fail(
              new FailedPrecondition({
                message: `branch ${branchPath} is ${b.value.status} and accepts no writes`,
                code: "PROCESSING_ERROR.BRANCH_ENDED",
                metadata: { branch_path: branchPath, status: b.value.status },
              }),
            )
          : Effect.void,
      ),
    );

/** Deep merge of JSON objects: fields of `b` win; objects merge recursively. */
const mergeJson = (a: Json, b: Json): Json => {
  const isObject = (x: Json): x is { [k: string]: Json } =>
    x !== null && typeof x === "object" && !Array.isArray(x);
  if (!isObject(a) || !isObject(b)) return b;
  const out: { [k: string]: Json } = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = k in out ? mergeJson(out[k] as Json, v) : v;
  return out;
};

const parseJsonObject = (data: Uint8Array): Json | undefined => {
  try {
    const v = JSON.parse(Buffer.from(data).toString("utf8")) as Json;
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
};

export const makeBranches = (store: MemoryStoreShape, memory: ReturnType<typeof makeMemory>) => {
  const now = Effect.clockWith((c) => c.currentTimeMillis);
  const checks = (executionId: string, branchPath: string, field = "branch_path") => [
    ...V.identifier("execution_id", executionId),
    ...branchPathViolations(field, branchPath),
  ];
  const load = (executionId: string, branchPath: string) =>
    store.branches.get(executionId, branchPath).pipe(
      Effect.flatMap(
        Option.match({
          onNone: () => Effect.fail(notFound(executionId, branchPath)),
          onSome: Effect.succeed,
        }),
      ),
    );

  /** With authentication on, only the principal that created a branch acts on it. */
  const actFor = (branch: BranchRecord) =>
    Effect.flatMap(FiberRef.get(CurrentPrincipal), (principal) =>
      principal !== undefined && branch.owner !== undefined && branch.owner !== principal
        ? Effect.fail(
            new PermissionDenied({
              message: `branch ${branch.branchPath} belongs to another principal`,
              metadata: { branch_path: branch.branchPath },
            }),
          )
        : Effect.void,
    );

  /** Removes the memory of exactly this branch (sub-branches end on their own). */
  const cleanOwnMemory = (executionId: string, branchPath: string) =>
    memory.internal.removeWhere(
      { executionId, branchPrefix: branchPath },
      (r) => r.branchPath === branchPath,
    );

  const createBranch = (req: CreateBranchRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(checks(req.executionId, req.branchPath));
        const parentPath = parentOf(req.branchPath);
        if (
          parentPath !== "" &&
          Option.isNone(yield* store.branches.get(req.executionId, parentPath))
        ) {
          return yield* Effect.fail(
            new FailedPrecondition({
              message: `parent branch ${parentPath} does not exist; create it first`,
              metadata: { parent_path: parentPath },
            }),
          );
        }
        const at = yield* now;
        const owner = yield* FiberRef.get(CurrentPrincipal);
        const record: BranchRecord = {
          executionId: req.executionId,
          branchPath: req.branchPath,
          parentPath,
          status: "NEW",
          retainForMerge: false,
          ...(owner === undefined ? {} : { owner }),
          revision: 1,
          createTime: at,
          updateTime: at,
        };
        if (!(yield* store.branches.create(record))) {
          return yield* Effect.fail(
            new AlreadyExists({
              message: `branch ${req.branchPath} already exists`,
              metadata: { branch_path: req.branchPath },
            }),
          );
        }
        return { branch: toBranch(record) };
      }),
    );

  const updateBranchStatus = (req: UpdateBranchStatusRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          checks(req.executionId, req.branchPath),
          req.status === BranchStatus.UNSPECIFIED
            ? [{ field: "status", description: "is required" }]
            : [],
        );
        const to = statusName(req.status);
        const current = yield* load(req.executionId, req.branchPath);
        yield* actFor(current);
        const from = current.status as StatusName;
        if (from === to) return { branch: toBranch(current), cleaned: 0n };
        if (!transitions[from].includes(to)) {
          return yield* Effect.fail(
            new FailedPrecondition({
              message: `branch status ${from} cannot change to ${to}`,
              code: "PROCESSING_ERROR.INVALID_STATE_TRANSITION",
              metadata: { from, to },
            }),
          );
        }
        const next: BranchRecord = {
          ...current,
          status: to,
          retainForMerge: ended(to) && req.retainForMerge,
          revision: current.revision + 1,
          updateTime: yield* now,
        };
        if (!(yield* store.branches.update(current.revision, next))) {
          return yield* Effect.fail(
            new Aborted({ message: "the branch changed concurrently; read it again" }),
          );
        }
        // A branch's memory goes when it ends, unless a merge still needs it.
        const cleaned =
          ended(to) && !req.retainForMerge
            ? yield* cleanOwnMemory(req.executionId, req.branchPath)
            : 0;
        return { branch: toBranch(next), cleaned: BigInt(cleaned) };
      }),
    );

  const getBranch = (req: GetBranchRequest) =>
    unavailable(
      V.check(checks(req.executionId, req.branchPath)).pipe(
        Effect.zipRight(load(req.executionId, req.branchPath)),
        Effect.map((b) => ({ branch: toBranch(b) })),
      ),
    );

  const listBranches = (req: ListBranchesRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(V.identifier("execution_id", req.executionId));
        const size = yield* V.pageSize(req.pageSize);
        const identity = { executionId: req.executionId, status: req.status };
        const after = yield* decodePageToken(req.pageToken, identity);
        const all = (yield* store.branches.list(req.executionId))
          .filter(
            (b) => req.status === BranchStatus.UNSPECIFIED || b.status === statusName(req.status),
          )
          .filter((b) => after === undefined || b.branchPath > after.id)
          .sort((x, y) => (x.branchPath < y.branchPath ? -1 : 1));
        const page = all.slice(0, size);
        const last = page[page.length - 1];
        return {
          branches: page.map(toBranch),
          nextPageToken:
            all.length > size && last
              ? encodePageToken({ value: null, id: last.branchPath }, identity)
              : "",
        };
      }),
    );

  const mergeBranches = (req: MergeBranchesRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          checks(req.executionId, req.targetBranch, "target_branch"),
          req.sourceBranches.length === 0
            ? [{ field: "source_branches", description: "is required" }]
            : [],
          V.maxItems("source_branches", req.sourceBranches, MAX_SOURCES),
          req.sourceBranches.flatMap((b, i) => branchPathViolations(`source_branches[${i}]`, b)),
          req.sourceBranches.flatMap((b, i) =>
            b === req.targetBranch
              ? [{ field: `source_branches[${i}]`, description: "must differ from the target" }]
              : [],
          ),
          req.priority.flatMap((b, i) =>
            req.sourceBranches.includes(b)
              ? []
              : [{ field: `priority[${i}]`, description: "must be one of source_branches" }],
          ),
          req.strategy === MergeStrategy.UNSPECIFIED
            ? [{ field: "strategy", description: "is required" }]
            : [],
          req.owner === ""
            ? [{ field: "owner", description: "is required" }]
            : V.maxLength("owner", req.owner, 256),
        );
        const target = yield* load(req.executionId, req.targetBranch);
        yield* actFor(target);
        if (ended(target.status)) {
          return yield* Effect.fail(
            new FailedPrecondition({
              message: `target branch ${req.targetBranch} is ${target.status}`,
            }),
          );
        }
        for (const source of req.sourceBranches) {
          const b = yield* load(req.executionId, source);
          if (b.status !== "COMPLETED") {
            return yield* Effect.fail(
              new FailedPrecondition({
                message: `source branch ${source} is ${b.status}; only COMPLETED branches merge`,
                metadata: { branch_path: source, status: b.status },
              }),
            );
          }
        }
        // Every output of every source, grouped by the address it takes in the target.
        const groups = new Map<
          string,
          Array<{ source: string; record: MemoryRecord; data: Uint8Array }>
        >();
        for (const source of req.sourceBranches) {
          const entries = yield* store.query({
            executionId: req.executionId,
            branchPrefix: source,
          });
          for (const { record } of entries.filter((e) => e.record.branchPath === source)) {
            const found = yield* store.read(record.address);
            if (Option.isNone(found)) continue; // expired meanwhile
            const targetAddress = formatAddress({
              ...(record as unknown as Address),
              branchPath: req.targetBranch,
            });
            const list = groups.get(targetAddress) ?? [];
            list.push({ source, record: found.value.entry.record, data: found.value.data });
            groups.set(targetAddress, list);
          }
        }
        const priority = req.priority.length > 0 ? req.priority : req.sourceBranches;
        const rank = (s: string) => {
          const i = priority.indexOf(s);
          return i < 0 ? priority.length : i;
        };
        const outputs = [];
        for (const [address, candidates] of groups) {
          const byWrite = [...candidates].sort(
            (x, y) => x.record.lastWriteTime - y.record.lastWriteTime,
          );
          let data: Uint8Array;
          let winner = byWrite[byWrite.length - 1] as (typeof candidates)[number];
          let applied = [winner.source];
          if (req.strategy === MergeStrategy.PRIORITY) {
            winner = [...candidates].sort(
              (x, y) => rank(x.source) - rank(y.source),
            )[0] as typeof winner;
            applied = [winner.source];
            data = winner.data;
          } else if (req.strategy === MergeStrategy.FIELD_LEVEL) {
            const parsed = byWrite.map((c) => parseJsonObject(c.data));
            if (parsed.every((p) => p !== undefined)) {
              data = Buffer.from(
                JSON.stringify(parsed.reduce((acc, p) => mergeJson(acc as Json, p as Json), {})),
              );
              applied = byWrite.map((c) => c.source);
            } else {
              data = winner.data; // not all JSON objects: last write wins
            }
          } else {
            data = winner.data;
          }
          yield* writeTarget(address, winner.record, data, req.owner);
          outputs.push({ address, sourceBranches: applied });
        }
        // The sources' memory was only kept for this merge.
        let cleaned = 0;
        for (const source of req.sourceBranches) {
          cleaned += yield* cleanOwnMemory(req.executionId, source);
          const b = yield* load(req.executionId, source);
          if (b.retainForMerge) {
            yield* store.branches.update(b.revision, {
              ...b,
              retainForMerge: false,
              revision: b.revision + 1,
              updateTime: yield* now,
            });
          }
        }
        return {
          outputs: outputs.sort((x, y) => (x.address < y.address ? -1 : 1)),
          cleaned: BigInt(cleaned),
        };
      }),
    );

  /** Allocates the target address if needed (same lifetime settings as the winning source), then writes. */
  const writeTarget = (address: string, from: MemoryRecord, data: Uint8Array, owner: string) =>
    Effect.gen(function* () {
      const at = yield* now;
      const parts = address.split(":");
      const record: MemoryRecord = {
        ...from,
        address,
        branchPath: parts[3] as string,
        owner,
        sizeBytes: data.length,
        sizeLimitBytes: Math.max(from.sizeLimitBytes, data.length),
        version: 1,
        revision: 1,
        allocateTime: at,
        lastWriteTime: at,
        expireTime: at + from.ttlMs,
      };
      if (yield* store.create(record)) {
        if (yield* store.update(address, 1, { ...record, revision: 2 }, data)) return;
      }
      yield* memory.internal.modify(address, (current) =>
        Effect.succeed({
          record: {
            ...current.record,
            sizeBytes: data.length,
            sizeLimitBytes: Math.max(current.record.sizeLimitBytes, data.length),
            version: current.record.version + 1,
            revision: current.record.revision + 1,
            lastWriteTime: at,
          },
          data,
        }),
      );
    });

  return { createBranch, updateBranchStatus, getBranch, listBranches, mergeBranches };
};
