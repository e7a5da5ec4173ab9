/**
 * The MemoryManager port's contract (issue #4), run unchanged against every
 * storage backend (embedded, Hazelcast): addresses in both forms and every
 * way to get one wrong, allocation, ownership and optimistic versions, the
 * registry, expiry by TTL and by max idle as the backend enforces it,
 * cleanup counts, races, branch lifecycle and the isolation matrix, merges
 * with each strategy, locks and the watch stream. Every test works on
 * execution ids of its own (random suffixes), so several runs can share one
 * cluster. Tests run on the real clock with short TTLs (1-2 s) and poll for
 * expiry instead of sleeping long.
 */
import { randomBytes } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type Duration,
  durationFromMs,
  durationMs,
  type Timestamp,
  timestampMs,
} from "@bufbuild/protobuf/wkt";
import { describe, expect, layer, type Vitest } from "@effect/vitest";
import { Duration as D, Effect, Either, Fiber, type Layer, Stream } from "effect";
import { BranchStatus, MergeStrategy } from "../../gen/floworchestrator/memory/v1/branch_pb.js";
import {
  MemoryManagerService,
  UnlockResponse_Status as UnlockStatus,
  WatchMemoryResponse_Type as WatchType,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { StepType } from "../../gen/floworchestrator/memory/v1/memory_pb.js";
import type { MeshError } from "../../src/common/errors.js";
import { MemoryManager } from "../../src/memory/MemoryManager.js";
import type { MemoryStore } from "../../src/memory/store.js";
import { memoryManagerLayer } from "../support/memory.js";
import { failure, invalid, portCaller, watching } from "../support/port.js";

// --- Calling the port ------------------------------------------------------------

type Methods = typeof MemoryManagerService.method;
/** The plain-object form of a request (not an already built message), to pick fields from. */
type Fields<K extends keyof Methods> = Exclude<
  MessageInitShape<Methods[K]["input"]>,
  { readonly $typeName: string }
>;

type Request<K extends keyof Methods> = MessageInitShape<Methods[K]["input"]>;

const { call, open } = portCaller(MemoryManagerService, MemoryManager);

/** `ok` when the call succeeds, else the error's tag. */
const outcome = <A, R>(effect: Effect.Effect<A, MeshError, R>) =>
  Effect.either(effect).pipe(
    Effect.map(Either.match({ onLeft: (e): string => e._tag, onRight: () => "ok" })),
  );

// --- Test data ------------------------------------------------------------------

/** A random suffix: valid in execution ids, flow ids, owners and resource names. */
const unique = (prefix: string): string => `${prefix}${randomBytes(5).toString("hex")}`;

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
const fromUtf8 = (b: Uint8Array): string => new TextDecoder().decode(b);

const OWNER = "step-owner";
const FLOW = "FLOW-001";

/** The canonical text of an address in execution `exec`. */
const at = (
  exec: string,
  branch = "main",
  step = "1",
  dataType = "Result",
  more: { flow?: string; stepType?: "IMPORT" | "PROCESS" | "EXPORT"; info?: string } = {},
): string =>
  [
    exec,
    more.flow ?? FLOW,
    more.stepType ?? "PROCESS",
    branch,
    step,
    dataType,
    ...(more.info ? [more.info] : []),
  ].join(":");

const text = (address: string) => ({ kind: { case: "text" as const, value: address } });

const allocate = (
  address: string,
  owner = OWNER,
  more: Omit<Fields<"allocate">, "address" | "owner"> = {},
) => call("allocate", { address: text(address), owner, ...more });

const write = (
  address: string,
  data: string | Uint8Array,
  owner = OWNER,
  more: Omit<Fields<"write">, "address" | "owner" | "data"> = {},
) =>
  call("write", {
    address: text(address),
    owner,
    data: typeof data === "string" ? utf8(data) : data,
    ...more,
  });

const read = (address: string, actingBranch = "") =>
  call("read", { address: text(address), actingBranch });

const exists = (address: string) =>
  call("exists", { address: text(address) }).pipe(Effect.map((r) => r.exists));

/** Addresses ListAddresses returns for a filter (one page of up to 1000). */
const listed = (init: Request<"listAddresses">) =>
  call("listAddresses", { pageSize: 1000, ...init }).pipe(
    Effect.map((r) => r.entries.map((e) => e.address)),
  );

const seconds = (s: number): Duration => durationFromMs(s * 1000);

/** A timestamp in epoch milliseconds; NaN when unset (so comparisons fail). */
const toMillis = (t: Timestamp | undefined): number =>
  t === undefined ? Number.NaN : timestampMs(t);
const durOf = (d: Duration | undefined): number => (d === undefined ? Number.NaN : durationMs(d));

const sorted = (xs: ReadonlyArray<string>): string[] => [...xs].sort();

/**
 * Polls `probe` every `every` ms until it yields true; fails after `within`
 * ms. Returns the milliseconds it took.
 */
const eventually = <E, R>(
  what: string,
  probe: Effect.Effect<boolean, E, R>,
  within: number,
  every = 200,
) =>
  Effect.gen(function* () {
    const start = Date.now();
    for (;;) {
      if (yield* probe) return Date.now() - start;
      if (Date.now() - start > within) {
        return yield* Effect.fail(new Error(`${what}: not within ${within} ms`));
      }
      yield* Effect.sleep(D.millis(every));
    }
  });

/** Execution with branches: `main` and each path given, all IN_PROGRESS. */
const branchesInProgress = (exec: string, ...paths: ReadonlyArray<string>) =>
  Effect.forEach(["main", ...paths], (branchPath) =>
    call("createBranch", { executionId: exec, branchPath }).pipe(
      Effect.zipRight(
        call("updateBranchStatus", {
          executionId: exec,
          branchPath,
          status: BranchStatus.IN_PROGRESS,
        }),
      ),
    ),
  );

type It = Vitest.MethodsNonLive<MemoryManager, true>;

// --- Addresses ----------------------------------------------------------------------

const addressTests = (it: It) =>
  describe("addresses", () => {
    it.effect("text and structured forms are accepted and name the same address", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        const address = `${exec}:FLOW-001:PROCESS:main.a:2:ProcessingResult:TransformedData`;
        const parts = {
          executionId: exec,
          flowId: "FLOW-001",
          stepType: StepType.PROCESS,
          branchPath: "main.a",
          stepId: "2",
          dataType: "ProcessingResult",
          additionalInfo: "TransformedData",
        };
        const { entry } = yield* call("allocate", {
          address: { kind: { case: "parts", value: parts } },
          owner: OWNER,
        });
        expect(entry?.address).toBe(address);
        expect(entry?.parts).toMatchObject(parts);
        yield* failure(allocate(address), "AlreadyExists");
        expect(yield* exists(address)).toBe(true);
        yield* call("write", {
          address: { kind: { case: "parts", value: parts } },
          owner: OWNER,
          data: utf8("by parts"),
        });
        const got = yield* read(address);
        expect(fromUtf8(got.data)).toBe("by parts");
        expect(got.entry?.address).toBe(address);
        expect(got.entry?.parts).toMatchObject(parts);

        // Six segments (no additional info) is a different address from seven.
        const six = `${exec}:FLOW-001:PROCESS:main.a:2:ProcessingResult`;
        expect(yield* exists(six)).toBe(false);
        const short = yield* call("allocate", {
          address: {
            kind: { case: "parts", value: { ...parts, additionalInfo: "" } },
          },
          owner: OWNER,
        });
        expect(short.entry?.address).toBe(six);
        expect(short.entry?.parts?.additionalInfo).toBe("");
        expect(yield* exists(six)).toBe(true);
      }),
    );

    it.effect("a malformed text address is InvalidArgument naming the bad segment", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        const bad = (address: string, ...fields: string[]) => invalid(allocate(address), ...fields);
        // Wrong segment count.
        yield* bad(`${exec}:F:PROCESS:main:1`, "address");
        yield* bad(`${exec}:F:PROCESS:main:1:D:info:extra`, "address");
        yield* bad("", "address");
        // Unknown step type.
        yield* bad(`${exec}:F:TRANSFORM:main:1:D`, "address.step_type");
        yield* bad(`${exec}:F:process:main:1:D`, "address.step_type");
        // Empty segments.
        yield* bad(`:F:PROCESS:main:1:D`, "address.execution_id");
        yield* bad(`${exec}::PROCESS:main:1:D`, "address.flow_id");
        yield* bad(`${exec}:F:PROCESS:main::D`, "address.step_id");
        yield* bad(`${exec}:F:PROCESS:main:1:`, "address.data_type");
        yield* bad(`${exec}:F:PROCESS:main:1:D:`, "address.additional_info");
        yield* bad(`${exec}:F::main:1:D`, "address.step_type");
        yield* bad(`${exec}:F:PROCESS::1:D`, "address.branch_path");
        // Over-long segments (257 characters).
        yield* bad(`${"x".repeat(257)}:F:PROCESS:main:1:D`, "address.execution_id");
        yield* bad(`${exec}:${"f".repeat(257)}:PROCESS:main:1:D`, "address.flow_id");
        yield* bad(`${exec}:F:PROCESS:main:1:${"d".repeat(257)}`, "address.data_type");
        // Control characters.
        yield* bad(`${exec}\u0001:F:PROCESS:main:1:D`, "address.execution_id");
        yield* bad(`${exec}:F:PROCESS:main:1:Da\nta`, "address.data_type");
        yield* bad(`${exec}:F:PROCESS:main:1\u007f:D`, "address.step_id");
        // Malformed branch paths.
        for (const branch of ["main..a", "other", "main.a b", "main.", ".main", "Main", "main/a"]) {
          yield* bad(`${exec}:F:PROCESS:${branch}:1:D`, "address.branch_path");
        }
        yield* bad(
          `${exec}:F:PROCESS:main.${Array.from({ length: 16 }, (_, i) => `b${i}`).join(".")}:1:D`,
          "address.branch_path",
        );
        yield* bad(`${exec}:F:PROCESS:main.${"a".repeat(65)}:1:D`, "address.branch_path");
        // Every bad segment is named at once.
        yield* bad(`:F:NOPE:main..a:1:D`, "address.execution_id", "address.step_type");
        const all = yield* failure(allocate(`:F:NOPE:main..a:1:D`), "InvalidArgument");
        expect(all.violations.map((v) => v.field)).toEqual([
          "address.execution_id",
          "address.step_type",
          "address.branch_path",
        ]);
        // Nothing was allocated along the way.
        expect(yield* listed({ executionId: exec })).toEqual([]);
      }),
    );

    it.effect("a malformed structured address is InvalidArgument naming the bad part", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        const good = {
          executionId: exec,
          flowId: "F",
          stepType: StepType.IMPORT,
          branchPath: "main",
          stepId: "1",
          dataType: "D",
          additionalInfo: "",
        };
        const bad = (change: Partial<typeof good>, field: string) =>
          invalid(
            call("allocate", {
              address: { kind: { case: "parts", value: { ...good, ...change } } },
              owner: OWNER,
            }),
            `address.parts.${field}`,
          );
        yield* bad({ executionId: "" }, "execution_id");
        yield* bad({ flowId: "a:b" }, "flow_id");
        yield* bad({ stepType: StepType.UNSPECIFIED }, "step_type");
        yield* bad({ stepType: 99 as StepType }, "step_type");
        yield* bad({ branchPath: "main..a" }, "branch_path");
        yield* bad({ branchPath: "other" }, "branch_path");
        yield* bad({ branchPath: "main.a b" }, "branch_path");
        yield* bad({ stepId: "" }, "step_id");
        yield* bad({ dataType: "x".repeat(257) }, "data_type");
        yield* bad({ additionalInfo: "a:b" }, "additional_info");
        yield* bad({ additionalInfo: "tab\there" }, "additional_info");
        yield* invalid(call("allocate", { owner: OWNER }), "address");
        expect(yield* listed({ executionId: exec })).toEqual([]);
      }),
    );

    it.effect("every RPC that takes an address validates it", () =>
      Effect.gen(function* () {
        const bad = text(`${unique("EXEC-")}:F:PROCESS:main..a:1:D`);
        const field = "address.branch_path";
        yield* invalid(call("write", { address: bad, owner: OWNER, data: utf8("x") }), field);
        yield* invalid(call("read", { address: bad }), field);
        yield* invalid(call("exists", { address: bad }), field);
        yield* invalid(call("release", { address: bad, owner: OWNER }), field);
        yield* invalid(
          call("transferOwnership", { address: bad, owner: OWNER, newOwner: "other" }),
          field,
        );
        yield* invalid(
          call("batchRead", { addresses: [text(at(unique("EXEC-"))), bad] }),
          "addresses[1].branch_path",
        );
        yield* invalid(
          call("tryLock", {
            resource: { kind: { case: "address", value: "x:y:NOPE:main:1:D" } },
            holder: "h",
          }),
          "resource.address.step_type",
        );
      }),
    );
  });

// --- Memory ----------------------------------------------------------------------------

const memoryTests = (it: It) =>
  describe("memory", () => {
    it.effect("allocate applies the defaults: TTL 300 s, max idle 60 s, size limit 16 MiB", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        const before = Date.now();
        const { entry } = yield* allocate(address, OWNER, { contentType: "application/json" });
        const after = Date.now();
        expect(entry).toMatchObject({
          address,
          owner: OWNER,
          contentType: "application/json",
          sizeBytes: 0n,
          sizeLimitBytes: BigInt(16 * 1024 * 1024),
          version: 0n,
        });
        expect(durOf(entry?.ttl)).toBe(300_000);
        expect(durOf(entry?.maxIdle)).toBe(60_000);
        expect(toMillis(entry?.allocateTime)).toBeGreaterThanOrEqual(before - 5);
        expect(toMillis(entry?.allocateTime)).toBeLessThanOrEqual(after + 5);
        expect(durOf(entry?.remainingTtl)).toBeGreaterThan(295_000);
        expect(durOf(entry?.remainingTtl)).toBeLessThanOrEqual(300_000);
        // Given values are kept.
        const custom = yield* allocate(at(unique("EXEC-")), OWNER, {
          ttl: seconds(120),
          maxIdle: seconds(30),
          sizeLimitBytes: 1024n,
        });
        expect(durOf(custom.entry?.ttl)).toBe(120_000);
        expect(durOf(custom.entry?.maxIdle)).toBe(30_000);
        expect(custom.entry?.sizeLimitBytes).toBe(1024n);
        // A TTL below the default max idle caps max idle at the TTL.
        const short = yield* allocate(at(unique("EXEC-")), OWNER, { ttl: seconds(10) });
        expect(durOf(short.entry?.maxIdle)).toBe(10_000);
      }),
    );

    it.effect("allocating an allocated address is AlreadyExists", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        yield* allocate(address);
        yield* write(address, "kept");
        yield* failure(allocate(address), "AlreadyExists");
        yield* failure(allocate(address, "someone-else"), "AlreadyExists");
        // The first allocation is untouched.
        const got = yield* read(address);
        expect(fromUtf8(got.data)).toBe("kept");
        expect(got.entry?.owner).toBe(OWNER);
      }),
    );

    it.effect("absurd lifetimes, limits and owners are InvalidArgument", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        yield* invalid(allocate(address, OWNER, { ttl: seconds(0) }), "ttl");
        yield* invalid(allocate(address, OWNER, { ttl: durationFromMs(500) }), "ttl");
        yield* invalid(allocate(address, OWNER, { ttl: seconds(-5) }), "ttl");
        yield* invalid(allocate(address, OWNER, { ttl: seconds(7 * 24 * 3600 + 1) }), "ttl");
        yield* invalid(allocate(address, OWNER, { maxIdle: seconds(0) }), "max_idle");
        yield* invalid(allocate(address, OWNER, { maxIdle: seconds(-1) }), "max_idle");
        yield* invalid(
          allocate(address, OWNER, { ttl: seconds(10), maxIdle: seconds(11) }),
          "max_idle",
        );
        yield* invalid(allocate(address, OWNER, { sizeLimitBytes: -1n }), "size_limit_bytes");
        yield* invalid(
          allocate(address, OWNER, { sizeLimitBytes: BigInt(16 * 1024 * 1024 + 1) }),
          "size_limit_bytes",
        );
        yield* invalid(allocate(address, ""), "owner");
        yield* invalid(allocate(address, "x".repeat(257)), "owner");
        yield* invalid(allocate(address, "bad\u0000owner"), "owner");
        yield* invalid(allocate(address, OWNER, { contentType: "x".repeat(256) }), "content_type");
        // The limits themselves are fine.
        const edge = yield* allocate(address, OWNER, {
          ttl: seconds(7 * 24 * 3600),
          maxIdle: seconds(1),
        });
        expect(durOf(edge.entry?.ttl)).toBe(7 * 24 * 3600_000);
        expect(yield* exists(address)).toBe(true);
      }),
    );

    it.effect("the owner writes: version +1 per write, size, content type", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        yield* allocate(address, OWNER, { contentType: "text/plain" });
        const first = yield* write(address, "hello");
        expect(first.entry).toMatchObject({
          address,
          version: 1n,
          sizeBytes: 5n,
          contentType: "text/plain",
        });
        const second = yield* write(address, '{"a":1}', OWNER, {
          contentType: "application/json",
        });
        expect(second.entry).toMatchObject({
          version: 2n,
          sizeBytes: 7n,
          contentType: "application/json",
        });
        // An empty content type keeps the current one.
        const third = yield* write(address, "");
        expect(third.entry).toMatchObject({
          version: 3n,
          sizeBytes: 0n,
          contentType: "application/json",
        });
        // Writes do not reset the TTL: it counts from allocation.
        expect(toMillis(third.entry?.allocateTime)).toBe(toMillis(first.entry?.allocateTime));
        const got = yield* read(address);
        expect(got.data.length).toBe(0);
        expect(got.entry?.version).toBe(3n);
        // Binary data comes back byte for byte.
        const binary = Uint8Array.from([0, 255, 1, 254, 0, 128]);
        yield* write(address, binary);
        expect([...(yield* read(address)).data]).toEqual([...binary]);
      }),
    );

    it.effect("a write by someone else is PermissionDenied; unallocated is NotFound", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        yield* allocate(address);
        yield* write(address, "mine");
        yield* failure(write(address, "theirs", "intruder"), "PermissionDenied");
        const got = yield* read(address);
        expect(fromUtf8(got.data)).toBe("mine");
        expect(got.entry?.version).toBe(1n);
        yield* failure(write(at(unique("EXEC-")), "x"), "NotFound");
        yield* invalid(write(address, "x", ""), "owner");
      }),
    );

    it.effect("an expected version that does not match is Aborted", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        yield* allocate(address);
        yield* failure(write(address, "x", OWNER, { expectedVersion: 1n }), "Aborted");
        const v1 = yield* write(address, "one", OWNER, { expectedVersion: 0n });
        expect(v1.entry?.version).toBe(1n);
        yield* failure(write(address, "stale", OWNER, { expectedVersion: 0n }), "Aborted");
        yield* failure(write(address, "future", OWNER, { expectedVersion: 5n }), "Aborted");
        const v2 = yield* write(address, "two", OWNER, { expectedVersion: 1n });
        expect(v2.entry?.version).toBe(2n);
        expect(fromUtf8((yield* read(address)).data)).toBe("two");
      }),
    );

    it.effect("data over the size limit is ResourceExhausted; at the limit is fine", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        yield* allocate(address, OWNER, { sizeLimitBytes: 8n });
        const full = yield* write(address, "12345678");
        expect(full.entry?.sizeBytes).toBe(8n);
        yield* failure(write(address, "123456789"), "ResourceExhausted");
        const got = yield* read(address);
        expect(fromUtf8(got.data)).toBe("12345678");
        expect(got.entry?.version).toBe(1n);
      }),
    );

    it.effect("read returns data and metadata and touches the last access time", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        const { entry: allocated } = yield* allocate(address, OWNER, {
          ttl: seconds(60),
          maxIdle: seconds(30),
          contentType: "text/plain",
        });
        const written = yield* write(address, "payload");
        const allocatedAt = toMillis(allocated?.allocateTime);
        const writtenAt = toMillis(written.entry?.lastAccessTime);
        expect(writtenAt).toBeGreaterThanOrEqual(allocatedAt);
        // Hazelcast keeps access times in whole seconds: wait longer than that.
        yield* Effect.sleep("1100 millis");
        const readAt = Date.now();
        const got = yield* read(address);
        expect(fromUtf8(got.data)).toBe("payload");
        expect(got.entry).toMatchObject({
          address,
          owner: OWNER,
          contentType: "text/plain",
          sizeBytes: 7n,
          sizeLimitBytes: BigInt(16 * 1024 * 1024),
          version: 1n,
        });
        expect(toMillis(got.entry?.allocateTime)).toBe(allocatedAt);
        expect(durOf(got.entry?.ttl)).toBe(60_000);
        expect(durOf(got.entry?.maxIdle)).toBe(30_000);
        const remaining = durOf(got.entry?.remainingTtl);
        expect(remaining).toBeLessThanOrEqual(60_000 - 1_000);
        expect(remaining).toBeGreaterThan(50_000);
        // The read counted as an access (to the second); listing and Exists do not.
        yield* Effect.sleep("200 millis");
        const accessOf = call("listAddresses", { executionId: address.split(":")[0] }).pipe(
          Effect.map((r) => toMillis(r.entries[0]?.lastAccessTime)),
        );
        const accessed = yield* accessOf;
        expect(accessed).toBeGreaterThanOrEqual(readAt - 1_050);
        expect(accessed).toBeGreaterThan(writtenAt);
        expect(accessed).toBeLessThanOrEqual(Date.now());
        yield* Effect.sleep("200 millis");
        expect(yield* exists(address)).toBe(true);
        expect(yield* accessOf).toBe(accessed);
        yield* failure(read(at(unique("EXEC-"))), "NotFound");
      }),
    );

    it.effect("batch read answers every address in order, found or not", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        const [a, b, missing] = [
          at(exec, "main", "1"),
          at(exec, "main", "2"),
          at(exec, "main", "3"),
        ];
        yield* allocate(a);
        yield* write(a, "A");
        yield* allocate(b);
        const { results } = yield* call("batchRead", {
          addresses: [text(b), text(missing), text(a)],
        });
        expect(results.map((r) => [r.address, r.found, fromUtf8(r.data)])).toEqual([
          [b, true, ""],
          [missing, false, ""],
          [a, true, "A"],
        ]);
        expect(results[2]?.entry?.version).toBe(1n);
        expect(results[1]?.entry).toBeUndefined();
        const empty = yield* call("batchRead", { addresses: [] });
        expect(empty.results).toEqual([]);
        yield* invalid(
          call("batchRead", { addresses: Array.from({ length: 101 }, () => text(a)) }),
          "addresses",
        );
      }),
    );

    it.effect("exists says whether an address is allocated", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        expect(yield* exists(address)).toBe(false);
        yield* allocate(address);
        expect(yield* exists(address)).toBe(true);
        yield* call("release", { address: text(address), owner: OWNER });
        expect(yield* exists(address)).toBe(false);
      }),
    );

    it.effect("only the owner releases; then the address is free again", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        yield* allocate(address);
        yield* write(address, "data");
        yield* failure(
          call("release", { address: text(address), owner: "intruder" }),
          "PermissionDenied",
        );
        expect(yield* exists(address)).toBe(true);
        yield* call("release", { address: text(address), owner: OWNER });
        expect(yield* exists(address)).toBe(false);
        yield* failure(read(address), "NotFound");
        yield* failure(call("release", { address: text(address), owner: OWNER }), "NotFound");
        // Released means allocatable again, from scratch.
        const again = yield* allocate(address, "next-owner");
        expect(again.entry).toMatchObject({ owner: "next-owner", version: 0n, sizeBytes: 0n });
      }),
    );

    it.effect("transfer of ownership: the new owner writes, the old one no longer can", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        yield* allocate(address, "old-owner");
        yield* write(address, "v1", "old-owner");
        yield* failure(
          call("transferOwnership", { address: text(address), owner: "intruder", newOwner: "x" }),
          "PermissionDenied",
        );
        const moved = yield* call("transferOwnership", {
          address: text(address),
          owner: "old-owner",
          newOwner: "new-owner",
        });
        expect(moved.entry).toMatchObject({ owner: "new-owner", version: 1n });
        const written = yield* write(address, "v2", "new-owner");
        expect(written.entry?.version).toBe(2n);
        yield* failure(write(address, "v3", "old-owner"), "PermissionDenied");
        yield* failure(
          call("release", { address: text(address), owner: "old-owner" }),
          "PermissionDenied",
        );
        expect(fromUtf8((yield* read(address)).data)).toBe("v2");
        yield* invalid(
          call("transferOwnership", { address: text(address), owner: "new-owner", newOwner: "" }),
          "new_owner",
        );
        yield* failure(
          call("transferOwnership", {
            address: text(at(unique("EXEC-"))),
            owner: "a",
            newOwner: "b",
          }),
          "NotFound",
        );
        yield* call("release", { address: text(address), owner: "new-owner" });
      }),
    );
  });

// --- Registry ------------------------------------------------------------------------

const registryTests = (it: It) =>
  describe("registry", () => {
    it.effect("list by execution, flow, branch prefix, owner and step type", () =>
      Effect.gen(function* () {
        const [exec, other] = [unique("EXEC-"), unique("EXEC-")];
        const [flowA, flowB] = [unique("FA-"), unique("FB-")];
        const [o1, o2] = [unique("o1-"), unique("o2-")];
        const rows = [
          { exec, flow: flowA, stepType: "IMPORT", branch: "main", owner: o1 },
          { exec, flow: flowA, stepType: "PROCESS", branch: "main.a", owner: o1 },
          { exec, flow: flowA, stepType: "PROCESS", branch: "main.a.b", owner: o2 },
          { exec, flow: flowB, stepType: "PROCESS", branch: "main.ab", owner: o2 },
          { exec, flow: flowA, stepType: "EXPORT", branch: "main.b", owner: o1 },
          { exec: other, flow: flowA, stepType: "PROCESS", branch: "main.a", owner: o1 },
        ] as const;
        const addressOf = (r: (typeof rows)[number]) =>
          at(r.exec, r.branch, "1", "Out", { flow: r.flow, stepType: r.stepType });
        for (const r of rows) yield* allocate(addressOf(r), r.owner);
        const expected = (keep: (r: (typeof rows)[number]) => boolean) =>
          sorted(rows.filter(keep).map(addressOf));

        expect(yield* listed({ executionId: exec })).toEqual(expected((r) => r.exec === exec));
        expect(yield* listed({ flowId: flowA })).toEqual(expected((r) => r.flow === flowA));
        expect(yield* listed({ executionId: exec, branchPathPrefix: "main.a" })).toEqual(
          expected((r) => r.exec === exec && (r.branch === "main.a" || r.branch === "main.a.b")),
        );
        expect(yield* listed({ executionId: exec, branchPathPrefix: "main" })).toEqual(
          expected((r) => r.exec === exec),
        );
        expect(yield* listed({ owner: o2 })).toEqual(expected((r) => r.owner === o2));
        expect(yield* listed({ executionId: exec, stepType: StepType.PROCESS })).toEqual(
          expected((r) => r.exec === exec && r.stepType === "PROCESS"),
        );
        expect(yield* listed({ flowId: flowA, owner: o1 })).toEqual(
          expected((r) => r.flow === flowA && r.owner === o1),
        );
        expect(yield* listed({ executionId: unique("EXEC-") })).toEqual([]);
        // Entries carry their metadata.
        const { entries } = yield* call("listAddresses", {
          executionId: exec,
          stepType: StepType.IMPORT,
        });
        expect(entries).toHaveLength(1);
        expect(entries[0]).toMatchObject({
          owner: o1,
          parts: {
            executionId: exec,
            flowId: flowA,
            stepType: StepType.IMPORT,
            branchPath: "main",
          },
        });
        // Bad filters.
        yield* invalid(call("listAddresses", { executionId: "a:b" }), "execution_id");
        yield* invalid(
          call("listAddresses", { branchPathPrefix: "main..a" }),
          "branch_path_prefix",
        );
      }),
    );

    it.effect("pages of 2 over 5 entries return every entry exactly once", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        const addresses = ["main", "main.a", "main.b", "main.c", "main.d"].map((b) => at(exec, b));
        for (const a of addresses) yield* allocate(a);
        const seen: string[] = [];
        const sizes: number[] = [];
        let token = "";
        for (let page = 0; page < 10; page++) {
          const r = yield* call("listAddresses", {
            executionId: exec,
            pageSize: 2,
            pageToken: token,
          });
          seen.push(...r.entries.map((e) => e.address));
          sizes.push(r.entries.length);
          token = r.nextPageToken;
          if (token === "") break;
        }
        expect(sizes).toEqual([2, 2, 1]);
        expect(seen).toEqual(sorted(addresses));
        // Default page size takes them all in one page.
        const one = yield* call("listAddresses", { executionId: exec });
        expect(one.entries.map((e) => e.address)).toEqual(sorted(addresses));
        expect(one.nextPageToken).toBe("");
        // A token belongs to its query.
        const first = yield* call("listAddresses", { executionId: exec, pageSize: 2 });
        yield* invalid(
          call("listAddresses", {
            executionId: unique("EXEC-"),
            pageSize: 2,
            pageToken: first.nextPageToken,
          }),
          "page_token",
        );
        yield* invalid(
          call("listAddresses", { executionId: exec, pageToken: "not-a-token" }),
          "page_token",
        );
        yield* invalid(call("listAddresses", { executionId: exec, pageSize: -1 }), "page_size");
      }),
    );

    it.effect("statistics count entries and bytes per execution and branch, hits and misses", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        const [m1, m2, a1] = [at(exec, "main", "1"), at(exec, "main", "2"), at(exec, "main.a")];
        for (const a of [m1, m2, a1]) yield* allocate(a);
        yield* write(m1, "abc");
        yield* write(m2, "defg");
        yield* write(a1, "0123456789");
        const stats = yield* call("getStatistics", { executionId: exec });
        expect(stats.entries).toBe(3n);
        expect(stats.bytes).toBe(17n);
        expect(stats.executions).toHaveLength(1);
        expect(stats.executions[0]).toMatchObject({ executionId: exec, entries: 3n, bytes: 17n });
        expect(
          stats.executions[0]?.branches.map((b) => [b.branchPath, b.entries, b.bytes]),
        ).toEqual([
          ["main", 2n, 7n],
          ["main.a", 1n, 10n],
        ]);
        // Without a filter: every execution, this one among them.
        const all = yield* call("getStatistics", {});
        expect(all.entries).toBeGreaterThanOrEqual(3n);
        expect(all.executions.find((e) => e.executionId === exec)?.bytes).toBe(17n);
        // Reads that find their address are hits, the others misses.
        const missing = at(exec, "main", "9");
        yield* read(m1);
        yield* read(a1);
        yield* failure(read(missing), "NotFound");
        yield* call("batchRead", { addresses: [text(m2), text(missing)] });
        const after = yield* call("getStatistics", { executionId: exec });
        expect(after.hits - stats.hits).toBe(3n);
        expect(after.misses - stats.misses).toBe(2n);
        // Releases and writes move the counts.
        yield* call("release", { address: text(m2), owner: OWNER });
        yield* write(m1, "a");
        const moved = yield* call("getStatistics", { executionId: exec });
        expect([moved.entries, moved.bytes]).toEqual([2n, 11n]);
        const none = yield* call("getStatistics", { executionId: unique("EXEC-") });
        expect([none.entries, none.bytes, none.executions]).toEqual([0n, 0n, []]);
        yield* invalid(call("getStatistics", { executionId: "a:b" }), "execution_id");
      }),
    );
  });

// --- Lifecycle ----------------------------------------------------------------------

const lifecycleTests = (it: It) =>
  describe("lifecycle", () => {
    it.effect(
      "an entry is gone after its TTL even while it is read every 300 ms",
      () =>
        Effect.gen(function* () {
          const exec = unique("EXEC-");
          const address = at(exec);
          const start = Date.now();
          yield* allocate(address, OWNER, { ttl: seconds(1) });
          yield* write(address, "short-lived");
          const gone = yield* eventually(
            "TTL expiry",
            read(address).pipe(
              Effect.tap((r) => expect(fromUtf8(r.data)).toBe("short-lived")),
              Effect.as(false),
              Effect.catchTag("NotFound", () => Effect.succeed(true)),
              Effect.tap((isGone) => {
                // Early reads still find it.
                if (isGone) expect(Date.now() - start).toBeGreaterThanOrEqual(700);
              }),
            ),
            4_500,
            300,
          );
          expect(gone).toBeGreaterThanOrEqual(700);
          expect(yield* exists(address)).toBe(false);
          // Nothing is left in the registry.
          expect(yield* listed({ executionId: exec })).toEqual([]);
          expect((yield* call("getStatistics", { executionId: exec })).entries).toBe(0n);
          // The address can be allocated again.
          yield* allocate(address);
        }),
      15_000,
    );

    it.effect(
      "an entry is gone after max idle without access, but reads keep it alive",
      () =>
        Effect.gen(function* () {
          const exec = unique("EXEC-");
          const address = at(exec);
          const untouched = at(exec, "main", "2");
          yield* allocate(address, OWNER, { ttl: seconds(10), maxIdle: seconds(1) });
          yield* allocate(untouched, OWNER, { ttl: seconds(10), maxIdle: seconds(1) });
          // Two seconds of reads every 300 ms: longer than max idle, never idle that long.
          const start = Date.now();
          while (Date.now() - start < 2_100) {
            yield* read(address);
            yield* Effect.sleep("300 millis");
          }
          // The one nobody read went meanwhile.
          expect(yield* exists(untouched)).toBe(false);
          expect(yield* exists(address)).toBe(true);
          // Left alone, it goes too.
          yield* Effect.sleep("1500 millis");
          yield* eventually(
            "max idle expiry",
            exists(address).pipe(Effect.map((e) => !e)),
            3_000,
            500,
          );
          yield* failure(read(address), "NotFound");
          expect(yield* listed({ executionId: exec })).toEqual([]);
        }),
      15_000,
    );

    it.effect("cleanup of a branch includes its sub-branches, not its siblings", () =>
      Effect.gen(function* () {
        const [exec, other] = [unique("EXEC-"), unique("EXEC-")];
        const branches = ["main", "main.a", "main.a.x", "main.a.x.y", "main.ab", "main.b"];
        for (const b of branches) yield* allocate(at(exec, b));
        yield* allocate(at(exec, "main.a", "2"));
        yield* allocate(at(other, "main.a"));
        const cleaned = yield* call("cleanupBranch", { executionId: exec, branchPath: "main.a" });
        expect(cleaned.removed).toBe(4n);
        expect(yield* listed({ executionId: exec })).toEqual(
          sorted(["main", "main.ab", "main.b"].map((b) => at(exec, b))),
        );
        expect(yield* listed({ executionId: exec, branchPathPrefix: "main.a" })).toEqual([]);
        expect(yield* exists(at(other, "main.a"))).toBe(true);
        const again = yield* call("cleanupBranch", { executionId: exec, branchPath: "main.a" });
        expect(again.removed).toBe(0n);
        yield* invalid(
          call("cleanupBranch", { executionId: exec, branchPath: "main..a" }),
          "branch_path",
        );
        yield* invalid(
          call("cleanupBranch", { executionId: "", branchPath: "main" }),
          "execution_id",
        );
      }),
    );

    it.effect("cleanup of an execution removes all of it and nothing else", () =>
      Effect.gen(function* () {
        const [exec, other] = [unique("EXEC-"), unique("EXEC-")];
        yield* call("createBranch", { executionId: exec, branchPath: "main" });
        for (const b of ["main", "main.a", "main.b"]) yield* allocate(at(exec, b));
        yield* allocate(at(exec, "main", "2"), "another-owner");
        yield* allocate(at(other));
        const cleaned = yield* call("cleanupExecution", { executionId: exec });
        expect(cleaned.removed).toBe(4n);
        expect(yield* listed({ executionId: exec })).toEqual([]);
        expect((yield* call("getStatistics", { executionId: exec })).entries).toBe(0n);
        expect(yield* listed({ executionId: other })).toEqual([at(other)]);
        // Its branches went too.
        yield* failure(call("getBranch", { executionId: exec, branchPath: "main" }), "NotFound");
        expect((yield* call("cleanupExecution", { executionId: exec })).removed).toBe(0n);
        yield* invalid(call("cleanupExecution", { executionId: "" }), "execution_id");
        yield* invalid(call("cleanupExecution", { executionId: "a:b" }), "execution_id");
      }),
    );
  });

// --- Races -----------------------------------------------------------------------------

const raceTests = (it: It) =>
  describe("races", () => {
    it.effect("50 concurrent allocations of one address: exactly one succeeds", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        const outcomes = yield* Effect.all(
          Array.from({ length: 50 }, (_, i) => outcome(allocate(address, `owner-${i}`))),
          { concurrency: "unbounded" },
        );
        expect(outcomes.filter((o) => o === "ok")).toHaveLength(1);
        expect(outcomes.filter((o) => o === "AlreadyExists")).toHaveLength(49);
        const winner = outcomes.indexOf("ok");
        expect((yield* read(address)).entry?.owner).toBe(`owner-${winner}`);
      }),
    );

    it.effect("50 concurrent writes at one expected version: exactly one succeeds", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        yield* allocate(address);
        const outcomes = yield* Effect.all(
          Array.from({ length: 50 }, (_, i) =>
            outcome(write(address, `writer-${i}`, OWNER, { expectedVersion: 0n })),
          ),
          { concurrency: "unbounded" },
        );
        expect(outcomes.filter((o) => o === "ok")).toHaveLength(1);
        expect(outcomes.filter((o) => o === "Aborted")).toHaveLength(49);
        const got = yield* read(address);
        expect(got.entry?.version).toBe(1n);
        expect(fromUtf8(got.data)).toBe(`writer-${outcomes.indexOf("ok")}`);
      }),
    );
  });

// --- Branches ----------------------------------------------------------------------------

const branchTests = (it: It) =>
  describe("branches", () => {
    it.effect("create: main first, parents must exist, duplicates are AlreadyExists", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        yield* failure(
          call("createBranch", { executionId: exec, branchPath: "main.a" }),
          "FailedPrecondition",
        );
        const before = Date.now();
        const main = yield* call("createBranch", { executionId: exec, branchPath: "main" });
        expect(main.branch).toMatchObject({
          executionId: exec,
          branchPath: "main",
          parentPath: "",
          status: BranchStatus.NEW,
          retainForMerge: false,
        });
        expect(toMillis(main.branch?.createTime)).toBeGreaterThanOrEqual(before - 5);
        const a = yield* call("createBranch", { executionId: exec, branchPath: "main.a" });
        expect(a.branch).toMatchObject({ parentPath: "main", status: BranchStatus.NEW });
        yield* failure(
          call("createBranch", { executionId: exec, branchPath: "main.a.x.y" }),
          "FailedPrecondition",
        );
        const x = yield* call("createBranch", { executionId: exec, branchPath: "main.a.x" });
        expect(x.branch?.parentPath).toBe("main.a");
        yield* failure(
          call("createBranch", { executionId: exec, branchPath: "main.a" }),
          "AlreadyExists",
        );
        yield* failure(
          call("createBranch", { executionId: exec, branchPath: "main" }),
          "AlreadyExists",
        );
        // Another execution has branches of its own.
        yield* failure(
          call("createBranch", { executionId: unique("EXEC-"), branchPath: "main.a" }),
          "FailedPrecondition",
        );
        yield* invalid(
          call("createBranch", { executionId: exec, branchPath: "other" }),
          "branch_path",
        );
        yield* invalid(
          call("createBranch", { executionId: exec, branchPath: "main..a" }),
          "branch_path",
        );
        yield* invalid(
          call("createBranch", { executionId: "", branchPath: "main" }),
          "execution_id",
        );
      }),
    );

    it.effect("status: NEW → IN_PROGRESS → COMPLETED; no way back", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        yield* call("createBranch", { executionId: exec, branchPath: "main" });
        yield* call("createBranch", { executionId: exec, branchPath: "main.a" });
        const update = (branchPath: string, status: BranchStatus, retainForMerge = false) =>
          call("updateBranchStatus", { executionId: exec, branchPath, status, retainForMerge });
        yield* failure(update("main.a", BranchStatus.COMPLETED), "FailedPrecondition");
        const created = (yield* call("getBranch", { executionId: exec, branchPath: "main.a" }))
          .branch;
        yield* Effect.sleep("20 millis");
        const started = yield* update("main.a", BranchStatus.IN_PROGRESS);
        expect(started.branch?.status).toBe(BranchStatus.IN_PROGRESS);
        expect(toMillis(started.branch?.updateTime)).toBeGreaterThan(toMillis(created?.updateTime));
        expect(toMillis(started.branch?.createTime)).toBe(toMillis(created?.createTime));
        const done = yield* update("main.a", BranchStatus.COMPLETED);
        expect(done.branch?.status).toBe(BranchStatus.COMPLETED);
        yield* failure(update("main.a", BranchStatus.IN_PROGRESS), "FailedPrecondition");
        yield* failure(update("main.a", BranchStatus.FAILED), "FailedPrecondition");
        yield* failure(update("main.a", BranchStatus.NEW), "FailedPrecondition");
        const got = yield* call("getBranch", { executionId: exec, branchPath: "main.a" });
        expect(got.branch).toEqual(done.branch);
        // FAILED from NEW or IN_PROGRESS.
        const failed = yield* update("main", BranchStatus.FAILED);
        expect(failed.branch?.status).toBe(BranchStatus.FAILED);
        yield* failure(update("main", BranchStatus.IN_PROGRESS), "FailedPrecondition");
        yield* failure(update("main.nope", BranchStatus.IN_PROGRESS), "NotFound");
        yield* invalid(update("main.a", BranchStatus.UNSPECIFIED), "status");
        yield* failure(call("getBranch", { executionId: exec, branchPath: "main.b" }), "NotFound");
      }),
    );

    it.effect("list branches of an execution, by status and in pages", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        const paths = ["main", "main.a", "main.a.x", "main.b", "main.c"];
        for (const branchPath of paths)
          yield* call("createBranch", { executionId: exec, branchPath });
        yield* call("createBranch", { executionId: unique("EXEC-"), branchPath: "main" });
        for (const branchPath of ["main", "main.b"]) {
          yield* call("updateBranchStatus", {
            executionId: exec,
            branchPath,
            status: BranchStatus.IN_PROGRESS,
          });
        }
        const all = yield* call("listBranches", { executionId: exec });
        expect(all.branches.map((b) => b.branchPath)).toEqual(paths);
        expect(all.nextPageToken).toBe("");
        const running = yield* call("listBranches", {
          executionId: exec,
          status: BranchStatus.IN_PROGRESS,
        });
        expect(running.branches.map((b) => b.branchPath)).toEqual(["main", "main.b"]);
        const seen: string[] = [];
        let token = "";
        for (let page = 0; page < 10; page++) {
          const r = yield* call("listBranches", {
            executionId: exec,
            pageSize: 2,
            pageToken: token,
          });
          seen.push(...r.branches.map((b) => b.branchPath));
          token = r.nextPageToken;
          if (token === "") break;
        }
        expect(seen).toEqual(paths);
        expect((yield* call("listBranches", { executionId: unique("EXEC-") })).branches).toEqual(
          [],
        );
        yield* invalid(call("listBranches", { executionId: "" }), "execution_id");
      }),
    );

    it.effect("ending a branch cleans its memory unless it is retained for a merge", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        yield* branchesInProgress(exec, "main.a", "main.b", "main.c");
        for (const b of ["main.a", "main.b", "main.c"]) {
          yield* allocate(at(exec, b, "1"));
          yield* allocate(at(exec, b, "2"));
        }
        yield* allocate(at(exec, "main"));
        const end = (branchPath: string, status: BranchStatus, retainForMerge: boolean) =>
          call("updateBranchStatus", { executionId: exec, branchPath, status, retainForMerge });
        const a = yield* end("main.a", BranchStatus.COMPLETED, false);
        expect(a.cleaned).toBe(2n);
        expect(a.branch?.retainForMerge).toBe(false);
        const b = yield* end("main.b", BranchStatus.COMPLETED, true);
        expect(b.cleaned).toBe(0n);
        expect(b.branch?.retainForMerge).toBe(true);
        const c = yield* end("main.c", BranchStatus.FAILED, false);
        expect(c.cleaned).toBe(2n);
        expect(yield* listed({ executionId: exec })).toEqual(
          sorted([at(exec), at(exec, "main.b", "1"), at(exec, "main.b", "2")]),
        );
        expect(
          (yield* call("getBranch", { executionId: exec, branchPath: "main.b" })).branch
            ?.retainForMerge,
        ).toBe(true);
      }),
    );

    it.effect("isolation matrix: own / ancestor / sibling / descendant × read / write", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        const branches = ["main", "main.a", "main.b", "main.a.x"];
        yield* branchesInProgress(exec, "main.a", "main.b", "main.a.x");
        for (const b of branches) {
          yield* allocate(at(exec, b), OWNER, { actingBranch: b });
          yield* write(at(exec, b), `data of ${b}`, OWNER, { actingBranch: b });
        }
        const relation = (acting: string, target: string) =>
          acting === target
            ? "own"
            : acting.startsWith(`${target}.`)
              ? "ancestor"
              : target.startsWith(`${acting}.`)
                ? "descendant"
                : "sibling";
        const expected: string[] = [];
        const actual: string[] = [];
        for (const acting of branches) {
          for (const target of branches) {
            const rel = relation(acting, target);
            const label = `${acting} → ${target} (${rel})`;
            const canRead = rel === "own" || rel === "ancestor";
            const canWrite = rel === "own";
            expected.push(
              `${label} read: ${canRead ? "ok" : "PermissionDenied"}`,
              `${label} write: ${canWrite ? "ok" : "PermissionDenied"}`,
            );
            const r = yield* outcome(
              read(at(exec, target), acting).pipe(
                Effect.tap((got) => expect(fromUtf8(got.data)).toMatch(/^data of /)),
              ),
            );
            const w = yield* outcome(
              write(at(exec, target), `data of ${target}`, OWNER, { actingBranch: acting }),
            );
            actual.push(`${label} read: ${r}`, `${label} write: ${w}`);
          }
        }
        expect(actual).toEqual(expected);
        // The relations all occur.
        expect(new Set(expected.map((e) => e.replace(/^.*\((\w+)\).*$/, "$1")))).toEqual(
          new Set(["own", "ancestor", "sibling", "descendant"]),
        );
        // Allocate, release and batch read are isolated the same way.
        yield* failure(
          allocate(at(exec, "main.b", "2"), OWNER, { actingBranch: "main.a" }),
          "PermissionDenied",
        );
        yield* failure(
          call("release", {
            address: text(at(exec, "main.b")),
            owner: OWNER,
            actingBranch: "main.a",
          }),
          "PermissionDenied",
        );
        yield* failure(
          call("batchRead", {
            addresses: [text(at(exec, "main")), text(at(exec, "main.b"))],
            actingBranch: "main.a",
          }),
          "PermissionDenied",
        );
        const batch = yield* call("batchRead", {
          addresses: [text(at(exec, "main")), text(at(exec, "main.a"))],
          actingBranch: "main.a.x",
        });
        expect(batch.results.map((r) => r.found)).toEqual([true, true]);
        yield* invalid(read(at(exec), "main..a"), "acting_branch");
      }),
    );

    it.effect("an ended branch accepts no writes; a failing branch leaves its siblings alone", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        yield* branchesInProgress(exec, "main.a", "main.b", "main.c");
        for (const b of ["main.a", "main.b", "main.c"]) {
          yield* allocate(at(exec, b), OWNER, { actingBranch: b });
          yield* write(at(exec, b), "before", OWNER, { actingBranch: b });
        }
        const failed = yield* call("updateBranchStatus", {
          executionId: exec,
          branchPath: "main.a",
          status: BranchStatus.FAILED,
        });
        expect(failed.cleaned).toBe(1n);
        yield* call("updateBranchStatus", {
          executionId: exec,
          branchPath: "main.c",
          status: BranchStatus.COMPLETED,
          retainForMerge: true,
        });
        // FAILED and COMPLETED branches: no writes, no allocations.
        for (const b of ["main.a", "main.c"]) {
          yield* failure(
            write(at(exec, b), "after", OWNER, { actingBranch: b }),
            "FailedPrecondition",
          );
          yield* failure(
            allocate(at(exec, b, "2"), OWNER, { actingBranch: b }),
            "FailedPrecondition",
          );
        }
        // The retained memory of the completed branch is still readable, unchanged.
        const kept = yield* read(at(exec, "main.c"), "main.c");
        expect(fromUtf8(kept.data)).toBe("before");
        // The sibling carries on.
        const goesOn = yield* write(at(exec, "main.b"), "after", OWNER, { actingBranch: "main.b" });
        expect(goesOn.entry?.version).toBe(2n);
        yield* allocate(at(exec, "main.b", "2"), OWNER, { actingBranch: "main.b" });
        expect(
          (yield* call("getBranch", { executionId: exec, branchPath: "main.b" })).branch?.status,
        ).toBe(BranchStatus.IN_PROGRESS);
      }),
    );
  });

// --- Merges -------------------------------------------------------------------------------

/**
 * An execution whose `main.a` and `main.b` wrote step 1 (`main.b` first,
 * `main.a` 30 ms later) and then COMPLETED, retained for the merge.
 */
const mergeSetup = (
  first: { branch: string; data: string },
  later: { branch: string; data: string },
) =>
  Effect.gen(function* () {
    const exec = unique("EXEC-");
    yield* branchesInProgress(exec, "main.a", "main.b");
    for (const { branch, data } of [first, later]) {
      yield* allocate(at(exec, branch), OWNER, {
        actingBranch: branch,
        contentType: "application/json",
      });
      yield* write(at(exec, branch), data, OWNER, { actingBranch: branch });
      yield* Effect.sleep("30 millis");
    }
    return exec;
  });

const complete = (exec: string, ...branches: ReadonlyArray<string>) =>
  Effect.forEach(branches, (branchPath) =>
    call("updateBranchStatus", {
      executionId: exec,
      branchPath,
      status: BranchStatus.COMPLETED,
      retainForMerge: true,
    }),
  );

const mergeTests = (it: It) =>
  describe("merges", () => {
    it.effect("last write wins; outputs name target and sources; sources are cleaned", () =>
      Effect.gen(function* () {
        const exec = yield* mergeSetup(
          { branch: "main.b", data: "from-b" },
          { branch: "main.a", data: "from-a" },
        );
        // An output only main.a has.
        yield* allocate(at(exec, "main.a", "2"), OWNER, { actingBranch: "main.a" });
        yield* write(at(exec, "main.a", "2"), "only-a", OWNER, { actingBranch: "main.a" });
        yield* complete(exec, "main.a", "main.b");
        const merged = yield* call("mergeBranches", {
          executionId: exec,
          targetBranch: "main",
          sourceBranches: ["main.a", "main.b"],
          strategy: MergeStrategy.LAST_WRITE_WINS,
          owner: "merger",
        });
        expect(merged.outputs.map((o) => [o.address, o.sourceBranches])).toEqual([
          [at(exec, "main", "1"), ["main.a"]],
          [at(exec, "main", "2"), ["main.a"]],
        ]);
        expect(merged.cleaned).toBe(3n);
        const target = yield* read(at(exec, "main"));
        expect(fromUtf8(target.data)).toBe("from-a");
        expect(target.entry).toMatchObject({ owner: "merger", sizeBytes: 6n });
        expect(fromUtf8((yield* read(at(exec, "main", "2"))).data)).toBe("only-a");
        expect(yield* listed({ executionId: exec })).toEqual(
          sorted([at(exec, "main", "1"), at(exec, "main", "2")]),
        );
        const a = yield* call("getBranch", { executionId: exec, branchPath: "main.a" });
        expect(a.branch?.retainForMerge).toBe(false);
        // The merged output belongs to the merge's owner.
        yield* write(at(exec, "main"), "next", "merger", { actingBranch: "main" });
      }),
    );

    it.effect("priority: the branch listed first in `priority` wins", () =>
      Effect.gen(function* () {
        const exec = yield* mergeSetup(
          { branch: "main.b", data: "from-b" },
          { branch: "main.a", data: "from-a" },
        );
        yield* complete(exec, "main.a", "main.b");
        const merged = yield* call("mergeBranches", {
          executionId: exec,
          targetBranch: "main",
          sourceBranches: ["main.a", "main.b"],
          strategy: MergeStrategy.PRIORITY,
          priority: ["main.b", "main.a"],
          owner: "merger",
        });
        expect(merged.outputs.map((o) => [o.address, o.sourceBranches])).toEqual([
          [at(exec, "main"), ["main.b"]],
        ]);
        expect(merged.cleaned).toBe(2n);
        expect(fromUtf8((yield* read(at(exec, "main"))).data)).toBe("from-b");
      }),
    );

    it.effect("priority defaults to the order of the source branches", () =>
      Effect.gen(function* () {
        const exec = yield* mergeSetup(
          { branch: "main.a", data: "from-a" },
          { branch: "main.b", data: "from-b" },
        );
        yield* complete(exec, "main.a", "main.b");
        const merged = yield* call("mergeBranches", {
          executionId: exec,
          targetBranch: "main",
          sourceBranches: ["main.a", "main.b"],
          strategy: MergeStrategy.PRIORITY,
          owner: "merger",
        });
        expect(merged.outputs[0]?.sourceBranches).toEqual(["main.a"]);
        expect(fromUtf8((yield* read(at(exec, "main"))).data)).toBe("from-a");
      }),
    );

    it.effect("field level: JSON objects merge field by field, later writes win per field", () =>
      Effect.gen(function* () {
        const exec = yield* mergeSetup(
          { branch: "main.a", data: JSON.stringify({ a: 1, b: 1, n: { x: 1 } }) },
          { branch: "main.b", data: JSON.stringify({ b: 2, c: 3, n: { y: 2 } }) },
        );
        yield* complete(exec, "main.a", "main.b");
        const merged = yield* call("mergeBranches", {
          executionId: exec,
          targetBranch: "main",
          sourceBranches: ["main.b", "main.a"],
          strategy: MergeStrategy.FIELD_LEVEL,
          owner: "merger",
        });
        expect(merged.outputs.map((o) => [o.address, o.sourceBranches])).toEqual([
          [at(exec, "main"), ["main.a", "main.b"]],
        ]);
        expect(merged.cleaned).toBe(2n);
        expect(JSON.parse(fromUtf8((yield* read(at(exec, "main"))).data))).toEqual({
          a: 1,
          b: 2,
          c: 3,
          n: { x: 1, y: 2 },
        });
      }),
    );

    it.effect("only COMPLETED sources merge; bad requests are InvalidArgument", () =>
      Effect.gen(function* () {
        const exec = yield* mergeSetup(
          { branch: "main.a", data: "a" },
          { branch: "main.b", data: "b" },
        );
        yield* complete(exec, "main.a");
        const merge = (init: Partial<Fields<"mergeBranches">>) =>
          call("mergeBranches", {
            executionId: exec,
            targetBranch: "main",
            sourceBranches: ["main.a", "main.b"],
            strategy: MergeStrategy.LAST_WRITE_WINS,
            owner: "merger",
            ...init,
          });
        yield* failure(merge({}), "FailedPrecondition");
        // Nothing moved.
        expect(yield* exists(at(exec, "main"))).toBe(false);
        expect(yield* exists(at(exec, "main.a"))).toBe(true);
        expect(yield* exists(at(exec, "main.b"))).toBe(true);
        yield* failure(merge({ sourceBranches: ["main.a", "main.zz"] }), "NotFound");
        yield* invalid(merge({ strategy: MergeStrategy.UNSPECIFIED }), "strategy");
        yield* invalid(merge({ sourceBranches: [] }), "source_branches");
        yield* invalid(merge({ sourceBranches: ["main.a", "main"] }), "source_branches[1]");
        yield* invalid(merge({ sourceBranches: ["main..a"] }), "source_branches[0]");
        yield* invalid(merge({ priority: ["main.c"] }), "priority[0]");
        yield* invalid(merge({ owner: "" }), "owner");
      }),
    );
  });

// --- Locks ----------------------------------------------------------------------------------

const lockTests = (it: It) =>
  describe("locks", () => {
    const named = (name: string) => ({ kind: { case: "name" as const, value: name } });
    const tryLock = (name: string, holder: string, more: Partial<Fields<"tryLock">> = {}) =>
      call("tryLock", { resource: named(name), holder, ...more });
    const unlock = (name: string, holder: string) =>
      call("unlock", { resource: named(name), holder }).pipe(Effect.map((r) => r.status));

    it.effect("try lock, contention, renewal and Dapr's unlock outcomes", () =>
      Effect.gen(function* () {
        const resource = unique("lock-");
        const before = Date.now();
        const first = yield* tryLock(resource, "alice", { lease: seconds(10) });
        expect(first.acquired).toBe(true);
        expect(toMillis(first.expireTime)).toBeGreaterThanOrEqual(before + 10_000 - 50);
        const latest = Date.now() + 10_050; // now plus the 10 s lease, with slack
        expect(toMillis(first.expireTime)).toBeLessThanOrEqual(latest);
        const contended = yield* tryLock(resource, "bob", { lease: seconds(10) });
        expect(contended.acquired).toBe(false);
        expect(contended.expireTime).toBeUndefined();
        yield* Effect.sleep("30 millis");
        const renewed = yield* tryLock(resource, "alice", { lease: seconds(20) });
        expect(renewed.acquired).toBe(true);
        expect(toMillis(renewed.expireTime)).toBeGreaterThan(toMillis(first.expireTime));
        expect(yield* unlock(resource, "bob")).toBe(UnlockStatus.LOCK_BELONGS_TO_OTHERS);
        expect((yield* tryLock(resource, "bob")).acquired).toBe(false);
        expect(yield* unlock(resource, "alice")).toBe(UnlockStatus.UNLOCKED);
        expect(yield* unlock(resource, "alice")).toBe(UnlockStatus.LOCK_DOES_NOT_EXIST);
        expect(yield* unlock(unique("lock-"), "alice")).toBe(UnlockStatus.LOCK_DOES_NOT_EXIST);
        expect((yield* tryLock(resource, "bob")).acquired).toBe(true);
        expect(yield* unlock(resource, "bob")).toBe(UnlockStatus.UNLOCKED);
      }),
    );

    it.effect("a lock on an address is another lock than on a name", () =>
      Effect.gen(function* () {
        const address = at(unique("EXEC-"));
        const byAddress = { kind: { case: "address" as const, value: address } };
        expect((yield* call("tryLock", { resource: byAddress, holder: "a" })).acquired).toBe(true);
        expect((yield* call("tryLock", { resource: byAddress, holder: "b" })).acquired).toBe(false);
        expect((yield* tryLock(address, "b")).acquired).toBe(true);
        expect((yield* call("unlock", { resource: byAddress, holder: "a" })).status).toBe(
          UnlockStatus.UNLOCKED,
        );
        expect(yield* unlock(address, "b")).toBe(UnlockStatus.UNLOCKED);
      }),
    );

    it.effect("with a wait timeout, a second holder gets the lock once the first unlocks", () =>
      Effect.gen(function* () {
        const resource = unique("lock-");
        expect((yield* tryLock(resource, "alice")).acquired).toBe(true);
        const start = Date.now();
        const waiting = yield* Effect.fork(
          tryLock(resource, "bob", { waitTimeout: seconds(5), lease: seconds(5) }),
        );
        yield* Effect.sleep("300 millis");
        expect(yield* unlock(resource, "alice")).toBe(UnlockStatus.UNLOCKED);
        const got = yield* Fiber.join(waiting);
        expect(got.acquired).toBe(true);
        expect(Date.now() - start).toBeGreaterThanOrEqual(250);
        expect(yield* unlock(resource, "alice")).toBe(UnlockStatus.LOCK_BELONGS_TO_OTHERS);
        // A wait that runs out answers not acquired.
        const waitStart = Date.now();
        const timedOut = yield* tryLock(resource, "carol", { waitTimeout: durationFromMs(300) });
        expect(timedOut.acquired).toBe(false);
        expect(Date.now() - waitStart).toBeGreaterThanOrEqual(250);
        expect(yield* unlock(resource, "bob")).toBe(UnlockStatus.UNLOCKED);
      }),
    );

    it.effect(
      "a lease of 500 ms expires and frees the lock",
      () =>
        Effect.gen(function* () {
          const resource = unique("lock-");
          const start = Date.now();
          expect((yield* tryLock(resource, "alice", { lease: durationFromMs(500) })).acquired).toBe(
            true,
          );
          expect((yield* tryLock(resource, "bob")).acquired).toBe(false);
          const took = yield* eventually(
            "lease expiry",
            tryLock(resource, "bob", { lease: seconds(5) }).pipe(Effect.map((r) => r.acquired)),
            4_000,
            100,
          );
          expect(Date.now() - start).toBeGreaterThanOrEqual(400);
          expect(took).toBeLessThan(4_000);
          expect(yield* unlock(resource, "alice")).toBe(UnlockStatus.LOCK_BELONGS_TO_OTHERS);
          expect(yield* unlock(resource, "bob")).toBe(UnlockStatus.UNLOCKED);
        }),
      10_000,
    );

    it.effect("20 concurrent holders: exactly one acquires", () =>
      Effect.gen(function* () {
        const resource = unique("lock-");
        const results = yield* Effect.all(
          Array.from({ length: 20 }, (_, i) =>
            tryLock(resource, `holder-${i}`).pipe(Effect.map((r) => r.acquired)),
          ),
          { concurrency: "unbounded" },
        );
        expect(results.filter(Boolean)).toHaveLength(1);
        const winner = `holder-${results.indexOf(true)}`;
        expect(yield* unlock(resource, winner)).toBe(UnlockStatus.UNLOCKED);
      }),
    );

    it.effect("bad lock requests are InvalidArgument", () =>
      Effect.gen(function* () {
        const resource = unique("lock-");
        yield* invalid(tryLock(resource, ""), "holder");
        yield* invalid(tryLock(resource, "h\u0001"), "holder");
        yield* invalid(tryLock(resource, "h", { lease: durationFromMs(50) }), "lease");
        yield* invalid(tryLock(resource, "h", { lease: seconds(3601) }), "lease");
        yield* invalid(tryLock(resource, "h", { waitTimeout: seconds(61) }), "wait_timeout");
        yield* invalid(tryLock(resource, "h", { waitTimeout: seconds(-1) }), "wait_timeout");
        yield* invalid(tryLock("", "h"), "resource.name");
        yield* invalid(tryLock("x".repeat(513), "h"), "resource.name");
        yield* invalid(call("tryLock", { holder: "h" }), "resource");
        yield* invalid(unlock(resource, ""), "holder");
      }),
    );
  });

// --- Watch ------------------------------------------------------------------------------------

const watchTests = (it: It) =>
  describe("watch", () => {
    it.effect(
      "events of an execution: STARTED, ALLOCATED, WRITTEN, RELEASED, then EXPIRED",
      () =>
        Effect.gen(function* () {
          const [exec, other] = [unique("EXEC-"), unique("EXEC-")];
          const next = yield* watching(
            open("watchMemory", { executionId: exec }),
            WatchType.HEARTBEAT,
          );
          const started = yield* next();
          expect(started.type).toBe(WatchType.STARTED);
          expect(started.address).toBe("");
          const address = at(exec);
          const before = Date.now();
          yield* allocate(at(other));
          yield* allocate(address);
          const allocated = yield* next();
          expect([allocated.type, allocated.address]).toEqual([WatchType.ALLOCATED, address]);
          expect(allocated.entry).toMatchObject({ address, owner: OWNER, version: 0n });
          expect(toMillis(allocated.time)).toBeGreaterThanOrEqual(before - 50);
          yield* write(at(other), "not watched").pipe(Effect.ignore);
          yield* write(address, "hello");
          const written = yield* next();
          expect([written.type, written.address]).toEqual([WatchType.WRITTEN, address]);
          expect(written.entry).toMatchObject({ version: 1n, sizeBytes: 5n });
          yield* call("release", { address: text(at(other)), owner: OWNER });
          yield* call("release", { address: text(address), owner: OWNER });
          const released = yield* next();
          expect([released.type, released.address]).toEqual([WatchType.RELEASED, address]);
          // An entry nobody touches expires.
          const shortLived = at(exec, "main", "2");
          yield* allocate(shortLived, OWNER, { ttl: seconds(1) });
          const allocatedAgain = yield* next();
          expect([allocatedAgain.type, allocatedAgain.address]).toEqual([
            WatchType.ALLOCATED,
            shortLived,
          ]);
          const expired = yield* next();
          expect([expired.type, expired.address]).toEqual([WatchType.EXPIRED, shortLived]);
        }),
      30_000,
    );

    it.effect("filters by branch prefix and address prefix exclude the rest", () =>
      Effect.gen(function* () {
        const exec = unique("EXEC-");
        const byBranch = yield* watching(
          open("watchMemory", { executionId: exec, branchPathPrefix: "main.a" }),
          WatchType.HEARTBEAT,
        );
        const byPrefix = yield* watching(
          open("watchMemory", { addressPrefix: `${exec}:${FLOW}:EXPORT:` }),
          WatchType.HEARTBEAT,
        );
        expect((yield* byBranch()).type).toBe(WatchType.STARTED);
        expect((yield* byPrefix()).type).toBe(WatchType.STARTED);
        for (const b of ["main", "main.ab", "main.b"]) yield* allocate(at(exec, b));
        yield* allocate(at(unique("EXEC-"), "main.a"));
        yield* allocate(at(exec, "main.a.x"));
        yield* allocate(at(exec, "main.b", "1", "Out", { stepType: "EXPORT" }));
        const seen = yield* byBranch();
        expect([seen.type, seen.address]).toEqual([WatchType.ALLOCATED, at(exec, "main.a.x")]);
        const prefixed = yield* byPrefix();
        expect([prefixed.type, prefixed.address]).toEqual([
          WatchType.ALLOCATED,
          at(exec, "main.b", "1", "Out", { stepType: "EXPORT" }),
        ]);
        yield* allocate(at(exec, "main.a"));
        expect((yield* byBranch()).address).toBe(at(exec, "main.a"));
      }),
    );

    it.effect("bad watch filters fail the stream with InvalidArgument", () =>
      Effect.gen(function* () {
        yield* invalid(
          Stream.runDrain(open("watchMemory", { branchPathPrefix: "main.a" })),
          "branch_path_prefix",
        );
        yield* invalid(
          Stream.runDrain(
            open("watchMemory", { executionId: unique("EXEC-"), branchPathPrefix: "main..a" }),
          ),
          "branch_path_prefix",
        );
        yield* invalid(
          Stream.runDrain(open("watchMemory", { executionId: "a:b" })),
          "execution_id",
        );
      }),
    );
  });

// --- Configured limits -------------------------------------------------------------------

const configuredTests = (it: It) => {
  it.effect("defaults and the data limit come from the configuration", () =>
    Effect.gen(function* () {
      const address = at(unique("EXEC-"));
      const { entry } = yield* allocate(address);
      expect(entry?.sizeLimitBytes).toBe(1024n);
      expect(durOf(entry?.ttl)).toBe(20_000);
      expect(durOf(entry?.maxIdle)).toBe(5_000);
      yield* write(address, new Uint8Array(1024));
      yield* failure(write(address, new Uint8Array(1025)), "ResourceExhausted");
      yield* invalid(
        allocate(at(unique("EXEC-")), OWNER, { sizeLimitBytes: 1025n }),
        "size_limit_bytes",
      );
      const short = yield* allocate(at(unique("EXEC-")), OWNER, { ttl: seconds(3) });
      expect(durOf(short.entry?.maxIdle)).toBe(3_000);
    }),
  );
};

// --- The suite --------------------------------------------------------------------------

/**
 * The MemoryManager conformance suite on a storage backend. `storage` is
 * called once per layer the suite builds (two).
 */
export const memoryManagerConformance = (
  name: string,
  storage: () => Layer.Layer<MemoryStore, unknown>,
): void => {
  describe(name, () => {
    // Live services: TTLs, max idle, leases and watch run on the real clock.
    layer(memoryManagerLayer(storage()), { excludeTestServices: true, timeout: "60 seconds" })(
      (it) => {
        addressTests(it);
        memoryTests(it);
        registryTests(it);
        lifecycleTests(it);
        raceTests(it);
        branchTests(it);
        mergeTests(it);
        lockTests(it);
        watchTests(it);
      },
    );
    layer(
      memoryManagerLayer(storage(), {
        maxDataBytes: 1024,
        defaultTtl: D.seconds(20),
        defaultMaxIdle: D.seconds(5),
      }),
      { excludeTestServices: true, timeout: "60 seconds" },
    )("with a 1 KiB data limit and 20 s / 5 s defaults", configuredTests);
  });
};
