/**
 * The storage contract under the MemoryManager: addressed entries whose
 * time-to-live and maximum idle time are enforced by the backend itself,
 * atomic read-modify-writes and compare-and-set updates, bulk reads,
 * filtered listing, a cluster-wide event stream, branch records and
 * holder-checked expiring locks. The rules (addresses, ownership,
 * isolation, merges) are written once on top; Hazelcast and the embedded
 * store implement only this, with the same semantics.
 */
import { Context, type Effect, type Option, type Queue, type Scope } from "effect";
import { StoreUnavailable } from "../common/store-error.js";

/** Metadata of one allocated address. Plain JSON. */
export interface MemoryRecord {
  /** Canonical text form; the key. */
  readonly address: string;
  readonly executionId: string;
  readonly flowId: string;
  /** `IMPORT` | `PROCESS` | `EXPORT`. */
  readonly stepType: string;
  readonly branchPath: string;
  readonly stepId: string;
  readonly dataType: string;
  readonly additionalInfo: string;
  readonly owner: string;
  readonly contentType: string;
  readonly sizeBytes: number;
  readonly sizeLimitBytes: number;
  /** Data version: 0 at allocation, +1 per write. */
  readonly version: number;
  /** Compare-and-set token: +1 on every update (writes, ownership changes). */
  readonly revision: number;
  readonly allocateTime: number;
  readonly lastWriteTime: number;
  readonly ttlMs: number;
  readonly maxIdleMs: number;
  /** allocateTime + ttlMs: the TTL counts from allocation and is not reset by writes. */
  readonly expireTime: number;
}

export interface StoredEntry {
  readonly record: MemoryRecord;
  /** Last read or write, as the backend tracks it for max idle (ms since epoch). */
  readonly lastAccessTime: number;
}

/** Every given field must match; `branchPrefix` matches the branch and its sub-branches. */
export interface MemoryFilter {
  readonly executionId?: string;
  readonly flowId?: string;
  /** `main.a` matches `main.a` and `main.a.b`, never `main.ab`. */
  readonly branchPrefix?: string;
  readonly owner?: string;
  readonly stepType?: string;
}

/**
 * What happened to an entry, as seen by the backend in any mesh instance.
 * `record` is the value after the change (for `removed` / `expired`, the
 * last value when the backend still has it).
 */
export interface StoreEvent {
  readonly type: "created" | "updated" | "removed" | "expired";
  readonly address: string;
  readonly record?: MemoryRecord;
  /** When the backend reported it (ms since epoch). */
  readonly time: number;
}

/** A branch of an execution. Plain JSON. */
export interface BranchRecord {
  readonly executionId: string;
  readonly branchPath: string;
  readonly parentPath: string;
  /** `NEW` | `IN_PROGRESS` | `COMPLETED` | `FAILED`. */
  readonly status: string;
  readonly retainForMerge: boolean;
  /** The principal that created it, when authentication is on. */
  readonly owner?: string;
  /** Compare-and-set token: 1 on create, +1 per update. */
  readonly revision: number;
  readonly createTime: number;
  readonly updateTime: number;
}

/** What a `modify` makes of an entry: its next record, and its next data when given. */
export interface EntryChange {
  readonly record: MemoryRecord;
  /** Absent: the data stays as it is. */
  readonly data?: Uint8Array;
}

/** An entry read with its data. */
export interface EntryWithData {
  readonly entry: StoredEntry;
  readonly data: Uint8Array;
}

export type UnlockResult = "unlocked" | "missing" | "others";

export { StoreUnavailable };

export interface MemoryStoreShape {
  /** `hazelcast` or `embedded`. */
  readonly backend: string;
  /** Cheap round trip to the backend, bounded in time. */
  readonly ping: Effect.Effect<void, StoreUnavailable>;

  /**
   * Creates the entry (the record and empty data) unless the address exists;
   * false when it does. From now on the backend removes it `ttlMs` after
   * creation, or `maxIdleMs` after the last access, whichever comes first.
   */
  readonly create: (record: MemoryRecord) => Effect.Effect<boolean, StoreUnavailable>;
  /** The entry's record; `touch` counts as an access (restarts max idle). */
  readonly get: (
    address: string,
    touch: boolean,
  ) => Effect.Effect<Option.Option<StoredEntry>, StoreUnavailable>;
  /** Record and data together; counts as an access. */
  readonly read: (address: string) => Effect.Effect<Option.Option<EntryWithData>, StoreUnavailable>;
  /**
   * `read` of several addresses, answered in the order given (an address
   * given twice is answered twice); with the backend's bulk reads, so the
   * round trips do not grow with the number of addresses.
   */
  readonly readMany: (
    addresses: ReadonlyArray<string>,
  ) => Effect.Effect<ReadonlyArray<Option.Option<EntryWithData>>, StoreUnavailable>;
  /**
   * Read-modify-write as one step: `change` gets the live entry and returns
   * its next record (and data), which replace it; no other change, creation
   * or removal of the address comes between the read and the write. None,
   * without calling `change`, when the entry is not there; when `change`
   * fails, the entry stays as it was. The record keeps its address; the TTL
   * keeps counting from allocation (`record.expireTime`); max idle restarts.
   * `change` decides, it does not wait: other writers of the address wait
   * for it. Gives the entry as written.
   */
  readonly modify: <E>(
    address: string,
    change: (current: StoredEntry) => Effect.Effect<EntryChange, E>,
  ) => Effect.Effect<Option.Option<StoredEntry>, E | StoreUnavailable>;
  /**
   * Replaces the record (and the data, when given) only if the stored
   * record's `revision` equals `expectedRevision`; atomic, so of two writers
   * with the same expected revision exactly one wins. The TTL keeps counting
   * from allocation (`record.expireTime`); max idle restarts. False when the
   * entry is gone or the revision differs.
   */
  readonly update: (
    address: string,
    expectedRevision: number,
    record: MemoryRecord,
    data?: Uint8Array,
  ) => Effect.Effect<boolean, StoreUnavailable>;
  /** Removes the entry and its data; false when it was not there. */
  readonly remove: (address: string) => Effect.Effect<boolean, StoreUnavailable>;
  /** Records of every live entry matching the filter (does not touch them), in no particular order. */
  readonly query: (
    filter: MemoryFilter,
  ) => Effect.Effect<ReadonlyArray<StoredEntry>, StoreUnavailable>;
  /** Events of every mesh instance sharing the backend, from now until the scope closes. */
  readonly subscribe: Effect.Effect<Queue.Dequeue<StoreEvent>, StoreUnavailable, Scope.Scope>;

  /** Branch records (kept until removed). Key: execution id + branch path. */
  readonly branches: {
    readonly get: (
      executionId: string,
      branchPath: string,
    ) => Effect.Effect<Option.Option<BranchRecord>, StoreUnavailable>;
    /** False when the branch exists. */
    readonly create: (record: BranchRecord) => Effect.Effect<boolean, StoreUnavailable>;
    /** Replaces the record only if its stored revision is `expectedRevision`; false otherwise. */
    readonly update: (
      expectedRevision: number,
      record: BranchRecord,
    ) => Effect.Effect<boolean, StoreUnavailable>;
    readonly list: (
      executionId: string,
    ) => Effect.Effect<ReadonlyArray<BranchRecord>, StoreUnavailable>;
    /** Removes every branch of an execution; returns how many. */
    readonly removeExecution: (executionId: string) => Effect.Effect<number, StoreUnavailable>;
  };

  /**
   * Takes the lock on `resource` for `holder` for `leaseMs` if nobody else
   * holds it (taking a lock you hold renews its lease). Never waits. The
   * backend expires the lock after the lease.
   */
  readonly tryLock: (
    resource: string,
    holder: string,
    leaseMs: number,
  ) => Effect.Effect<{ readonly acquired: boolean; readonly expireTime: number }, StoreUnavailable>;
  /** Releases the lock if `holder` holds it. */
  readonly unlock: (
    resource: string,
    holder: string,
  ) => Effect.Effect<UnlockResult, StoreUnavailable>;
}

export class MemoryStore extends Context.Tag("fo/memory/MemoryStore")<
  MemoryStore,
  MemoryStoreShape
>() {}
