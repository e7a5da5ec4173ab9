/**
 * Addressed memory: allocation, ownership, reads and writes with optimistic
 * versions, the registry (listing, statistics) and cleanup. Branch
 * isolation is enforced here when a request names the branch it acts for.
 */
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Effect, Option } from "effect";
import type {
  AllocateRequest,
  BatchReadRequest,
  CleanupBranchRequest,
  CleanupExecutionRequest,
  ExistsRequest,
  GetStatisticsRequest,
  ListAddressesRequest,
  ReadRequest,
  ReleaseRequest,
  TransferOwnershipRequest,
  WriteRequest,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { StepType } from "../../gen/floworchestrator/memory/v1/memory_pb.js";
import {
  Aborted,
  AlreadyExists,
  type FailedPrecondition,
  NotFound,
  PermissionDenied,
  ResourceExhausted,
} from "../common/errors.js";
import { decodePageToken, encodePageToken } from "../common/page-token.js";
import * as V from "../common/validate.js";
import {
  type Address,
  branchPathViolations,
  formatAddress,
  isWithin,
  refText,
  resolveRef,
} from "./address.js";
import { toEntry, unavailable } from "./common.js";
import type {
  EntryChange,
  MemoryFilter,
  MemoryRecord,
  MemoryStoreShape,
  StoredEntry,
} from "./store.js";

export interface MemoryLimits {
  readonly defaultTtlMs: number;
  readonly defaultMaxIdleMs: number;
  readonly maxDataBytes: number;
}

const MIN_TTL_MS = 1_000;
const MAX_TTL_MS = 7 * 24 * 3_600_000;
const MAX_BATCH = 100;

const owner = (field: string, value: string): V.Violations => V.label(field, value, 256);

const notFound = (address: string) =>
  new NotFound({
    message: `address ${address} is not allocated`,
    metadata: { address },
    code: "RESOURCE_ERROR.NOT_FOUND",
  });

const notOwner = (address: string) =>
  new PermissionDenied({
    message: `only the owner of ${address} may do this`,
    metadata: { address },
  });

export const makeMemory = (
  store: MemoryStoreShape,
  limits: MemoryLimits,
  /** Fails when the acting branch may not write (ended) — supplied by the branch area. */
  branchAcceptsWrites: (
    executionId: string,
    branchPath: string,
  ) => Effect.Effect<void, FailedPrecondition | import("./store.js").StoreUnavailable>,
) => {
  /** Reads that found their address, and that did not. */
  let hits = 0;
  let misses = 0;
  const now = Effect.clockWith((c) => c.currentTimeMillis);

  /** Isolation: a branch writes only its own addresses. */
  const mayWrite = (acting: string, a: Address) =>
    // No acting branch (nearly every call): nothing to check, no generator run.
    acting === ""
      ? Effect.void
      : Effect.gen(function* () {
          yield* V.check(branchPathViolations("acting_branch", acting));
          if (acting !== a.branchPath) {
            return yield* Effect.fail(
              new PermissionDenied({
                message: `branch ${acting} may only write its own addresses, not ${a.branchPath}'s`,
                code: "AUTHENTICATION_ERROR.BRANCH_ISOLATION",
                metadata: { acting_branch: acting, branch_path: a.branchPath },
              }),
            );
          }
          yield* branchAcceptsWrites(a.executionId, acting);
        });

  /** Isolation: a branch reads its own and its ancestors' addresses, never a sibling's or a child's. */
  const mayRead = (acting: string, a: Address) =>
    acting === ""
      ? Effect.void
      : Effect.gen(function* () {
          yield* V.check(branchPathViolations("acting_branch", acting));
          if (!isWithin(acting, a.branchPath)) {
            return yield* Effect.fail(
              new PermissionDenied({
                message: `branch ${acting} may not read ${a.branchPath}'s memory (only its own and its ancestors')`,
                code: "AUTHENTICATION_ERROR.BRANCH_ISOLATION",
                metadata: { acting_branch: acting, branch_path: a.branchPath },
              }),
            );
          }
        });

  const load = (address: string, touch: boolean) =>
    store
      .get(address, touch)
      .pipe(
        Effect.flatMap(
          Option.match({ onNone: () => Effect.fail(notFound(address)), onSome: Effect.succeed }),
        ),
      );

  /**
   * Read-modify-write as one store step: nothing changes the entry between
   * `change` seeing it and its result being stored. With an expected
   * version, another version is ABORTED.
   */
  const modify = <E>(
    address: string,
    change: (current: StoredEntry) => Effect.Effect<EntryChange, E>,
    expectedVersion?: bigint,
  ) =>
    store
      .modify(
        address,
        (current): Effect.Effect<EntryChange, E | Aborted> =>
          expectedVersion !== undefined && BigInt(current.record.version) !== expectedVersion
            ? Effect.fail(
                new Aborted({
                  message: `${address} is not at version ${expectedVersion}`,
                  metadata: { address },
                }),
              )
            : change(current),
      )
      .pipe(
        Effect.flatMap((found) =>
          Option.isNone(found) ? Effect.fail(notFound(address)) : Effect.succeed(found.value),
        ),
      );

  const allocate = (req: AllocateRequest) =>
    unavailable(
      Effect.gen(function* () {
        const a = yield* resolveRef("address", req.address);
        const ttlMs = req.ttl ? durationMs(req.ttl) : limits.defaultTtlMs;
        const maxIdleMs = req.maxIdle
          ? durationMs(req.maxIdle)
          : Math.min(limits.defaultMaxIdleMs, ttlMs);
        const sizeLimit =
          req.sizeLimitBytes === 0n ? limits.maxDataBytes : Number(req.sizeLimitBytes);
        yield* V.check(
          owner("owner", req.owner),
          ttlMs < MIN_TTL_MS || ttlMs > MAX_TTL_MS
            ? [{ field: "ttl", description: "must be between 1 s and 7 days" }]
            : [],
          maxIdleMs < MIN_TTL_MS || maxIdleMs > ttlMs
            ? [{ field: "max_idle", description: "must be between 1 s and the TTL" }]
            : [],
          sizeLimit <= 0 || sizeLimit > limits.maxDataBytes
            ? [
                {
                  field: "size_limit_bytes",
                  description: `must be between 1 and ${limits.maxDataBytes}`,
                },
              ]
            : [],
          V.maxLength("content_type", req.contentType, 255),
        );
        yield* mayWrite(req.actingBranch, a);
        const at = yield* now;
        const address = formatAddress(a);
        const record: MemoryRecord = {
          address,
          ...a,
          owner: req.owner,
          contentType: req.contentType,
          sizeBytes: 0,
          sizeLimitBytes: sizeLimit,
          version: 0,
          revision: 1,
          allocateTime: at,
          lastWriteTime: at,
          ttlMs,
          maxIdleMs,
          expireTime: at + ttlMs,
        };
        if (!(yield* store.create(record))) {
          return yield* Effect.fail(
            new AlreadyExists({
              message: `address ${address} is already allocated`,
              metadata: { address },
            }),
          );
        }
        return { entry: toEntry({ record, lastAccessTime: at }, at) };
      }),
    );

  /** The record a write makes of `r`, or why it may not. */
  const written = (
    req: WriteRequest,
    address: string,
    r: MemoryRecord,
    at: number,
  ): Effect.Effect<EntryChange, PermissionDenied | ResourceExhausted> => {
    if (r.owner !== req.owner) return Effect.fail(notOwner(address));
    if (req.data.length > r.sizeLimitBytes) {
      return Effect.fail(
        new ResourceExhausted({
          message: `${req.data.length} bytes exceed the size limit of ${r.sizeLimitBytes} for ${address}`,
          metadata: { address, size_limit_bytes: `${r.sizeLimitBytes}` },
        }),
      );
    }
    return Effect.succeed({
      record: {
        ...r,
        contentType: req.contentType === "" ? r.contentType : req.contentType,
        sizeBytes: req.data.length,
        version: r.version + 1,
        revision: r.revision + 1,
        lastWriteTime: at,
      },
      data: req.data,
    });
  };

  // Busy too: plain combinators, as Read.
  const write = (req: WriteRequest) =>
    unavailable(
      Effect.flatMap(resolveRef("address", req.address), (a) => {
        const address = refText(req.address, a);
        const change = Effect.flatMap(
          modify(
            address,
            (current) =>
              Effect.clockWith((clock) =>
                written(req, address, current.record, clock.unsafeCurrentTimeMillis()),
              ),
            req.expectedVersion,
          ),
          (entry) =>
            Effect.clockWith((clock) =>
              Effect.succeed({ entry: toEntry(entry, clock.unsafeCurrentTimeMillis()) }),
            ),
        );
        const checks = V.check(
          owner("owner", req.owner),
          V.maxLength("content_type", req.contentType, 255),
        );
        return Effect.zipRight(Effect.zipRight(checks, mayWrite(req.actingBranch, a)), change);
      }),
    );

  /** A read's result, counted as a hit or a miss. */
  const counted = <A>(found: Option.Option<A>) => {
    if (Option.isSome(found)) hits++;
    else misses++;
    return found;
  };

  /** The store's read of an address, counted. */
  const readAddress = (address: string) => Effect.map(store.read(address), counted);

  const readOne = (a: Address) => readAddress(formatAddress(a));

  /** `readOne` of many, with the store's bulk read. */
  const readMany = (addresses: ReadonlyArray<Address>) =>
    Effect.gen(function* () {
      const found = yield* store.readMany(addresses.map(formatAddress));
      const hit = found.filter(Option.isSome).length;
      hits += hit;
      misses += found.length - hit;
      return found;
    });

  // The busiest call: as few steps as its checks allow (each costs the fiber ~1 µs and garbage).
  const read = (req: ReadRequest) =>
    unavailable(
      Effect.flatMap(resolveRef("address", req.address), (a) => {
        const address = refText(req.address, a);
        const found = Effect.clockWith((clock) =>
          Effect.flatMap(store.read(address), (found) => {
            counted(found);
            if (Option.isNone(found)) return Effect.fail(notFound(address));
            return Effect.succeed({
              data: found.value.data,
              entry: toEntry(found.value.entry, clock.unsafeCurrentTimeMillis()),
            });
          }),
        );
        return req.actingBranch === ""
          ? found
          : Effect.zipRight(mayRead(req.actingBranch, a), found);
      }),
    );

  const batchRead = (req: BatchReadRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(V.maxItems("addresses", req.addresses, MAX_BATCH));
        const addresses = yield* Effect.forEach(req.addresses, (ref, i) =>
          resolveRef(`addresses[${i}]`, ref),
        );
        yield* Effect.forEach(addresses, (a) => mayRead(req.actingBranch, a));
        const at = yield* now;
        const results = yield* readMany(addresses);
        return {
          results: results.map((found, i) =>
            Option.match(found, {
              onNone: () => ({ address: formatAddress(addresses[i] as Address), found: false }),
              onSome: (f) => ({
                address: f.entry.record.address,
                found: true,
                data: f.data,
                entry: toEntry(f.entry, at),
              }),
            }),
          ),
        };
      }),
    );

  const exists = (req: ExistsRequest) =>
    unavailable(
      Effect.gen(function* () {
        const a = yield* resolveRef("address", req.address);
        return { exists: Option.isSome(yield* store.get(formatAddress(a), false)) };
      }),
    );

  const release = (req: ReleaseRequest) =>
    unavailable(
      Effect.gen(function* () {
        const a = yield* resolveRef("address", req.address);
        yield* V.check(owner("owner", req.owner));
        yield* mayWrite(req.actingBranch, a);
        const address = formatAddress(a);
        const current = yield* load(address, false);
        if (current.record.owner !== req.owner) return yield* Effect.fail(notOwner(address));
        if (!(yield* store.remove(address))) return yield* Effect.fail(notFound(address));
        return {};
      }),
    );

  const transferOwnership = (req: TransferOwnershipRequest) =>
    unavailable(
      Effect.gen(function* () {
        const a = yield* resolveRef("address", req.address);
        yield* V.check(owner("owner", req.owner), owner("new_owner", req.newOwner));
        const address = formatAddress(a);
        const moved = yield* modify(address, (current) =>
          current.record.owner !== req.owner
            ? Effect.fail(notOwner(address))
            : Effect.succeed({
                record: {
                  ...current.record,
                  owner: req.newOwner,
                  revision: current.record.revision + 1,
                },
              }),
        );
        return { entry: toEntry(moved, yield* now) };
      }),
    );

  const filterOf = (
    req: ListAddressesRequest,
  ): Effect.Effect<MemoryFilter, import("../common/errors.js").InvalidArgument> =>
    V.check(
      req.executionId === "" ? [] : V.identifier("execution_id", req.executionId),
      req.flowId === "" ? [] : V.identifier("flow_id", req.flowId),
      req.branchPathPrefix === ""
        ? []
        : branchPathViolations("branch_path_prefix", req.branchPathPrefix),
      req.owner === "" ? [] : owner("owner", req.owner),
    ).pipe(
      Effect.as({
        ...(req.executionId ? { executionId: req.executionId } : {}),
        ...(req.flowId ? { flowId: req.flowId } : {}),
        ...(req.branchPathPrefix ? { branchPrefix: req.branchPathPrefix } : {}),
        ...(req.owner ? { owner: req.owner } : {}),
        ...(req.stepType === StepType.UNSPECIFIED ? {} : { stepType: StepType[req.stepType] }),
      }),
    );

  const listAddresses = (req: ListAddressesRequest) =>
    unavailable(
      Effect.gen(function* () {
        const filter = yield* filterOf(req);
        const size = yield* V.pageSize(req.pageSize);
        const after = yield* decodePageToken(req.pageToken, filter);
        const all = [...(yield* store.query(filter))].sort((x, y) =>
          x.record.address < y.record.address ? -1 : x.record.address > y.record.address ? 1 : 0,
        );
        const rest = after ? all.filter((e) => e.record.address > after.id) : all;
        const page = rest.slice(0, size);
        const at = yield* now;
        const last = page[page.length - 1];
        return {
          entries: page.map((e) => toEntry(e, at)),
          nextPageToken:
            rest.length > size && last
              ? encodePageToken({ value: null, id: last.record.address }, filter)
              : "",
        };
      }),
    );

  const getStatistics = (req: GetStatisticsRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(req.executionId === "" ? [] : V.identifier("execution_id", req.executionId));
        const entries = yield* store.query(req.executionId ? { executionId: req.executionId } : {});
        const byExecution = new Map<string, Map<string, { entries: number; bytes: number }>>();
        for (const { record: r } of entries) {
          const branches = byExecution.get(r.executionId) ?? new Map();
          byExecution.set(r.executionId, branches);
          const b = branches.get(r.branchPath) ?? { entries: 0, bytes: 0 };
          branches.set(r.branchPath, { entries: b.entries + 1, bytes: b.bytes + r.sizeBytes });
        }
        const sum = (xs: Iterable<{ entries: number; bytes: number }>) =>
          [...xs].reduce((s, x) => ({ entries: s.entries + x.entries, bytes: s.bytes + x.bytes }), {
            entries: 0,
            bytes: 0,
          });
        const executions = [...byExecution.entries()]
          .sort(([x], [y]) => (x < y ? -1 : 1))
          .map(([executionId, branches]) => {
            const total = sum(branches.values());
            return {
              executionId,
              entries: BigInt(total.entries),
              bytes: BigInt(total.bytes),
              branches: [...branches.entries()]
                .sort(([x], [y]) => (x < y ? -1 : 1))
                .map(([branchPath, b]) => ({
                  branchPath,
                  entries: BigInt(b.entries),
                  bytes: BigInt(b.bytes),
                })),
            };
          });
        const total = sum(entries.map((e) => ({ entries: 1, bytes: e.record.sizeBytes })));
        return {
          entries: BigInt(total.entries),
          bytes: BigInt(total.bytes),
          executions,
          hits: BigInt(hits),
          misses: BigInt(misses),
        };
      }),
    );

  /** Removes every entry matching the filter (and `keep` accepts); returns how many went. */
  const removeWhere = (filter: MemoryFilter, keep: (r: MemoryRecord) => boolean = () => true) =>
    Effect.gen(function* () {
      const entries = (yield* store.query(filter)).filter((e) => keep(e.record));
      const removed = yield* Effect.forEach(entries, (e) => store.remove(e.record.address), {
        concurrency: 16,
      });
      return removed.filter(Boolean).length;
    });

  const cleanupExecution = (req: CleanupExecutionRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(V.identifier("execution_id", req.executionId));
        const removed = yield* removeWhere({ executionId: req.executionId });
        yield* store.branches.removeExecution(req.executionId);
        return { removed: BigInt(removed) };
      }),
    );

  const cleanupBranch = (req: CleanupBranchRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(
          V.identifier("execution_id", req.executionId),
          branchPathViolations("branch_path", req.branchPath),
        );
        return {
          removed: BigInt(
            yield* removeWhere({ executionId: req.executionId, branchPrefix: req.branchPath }),
          ),
        };
      }),
    );

  return {
    allocate,
    write,
    read,
    batchRead,
    exists,
    release,
    transferOwnership,
    listAddresses,
    getStatistics,
    cleanupExecution,
    cleanupBranch,
    /** For branches and merges. */
    internal: { removeWhere, readOne, modify, mayWrite },
  };
};
