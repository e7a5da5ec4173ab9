/**
 * MemoryStore on a Hazelcast 5.x cluster (Community edition) through the
 * official Node client. Four maps, named `${mapPrefix}meta|data|branches|locks`:
 *
 * - `meta`: address → the record as a `HazelcastJsonValue` (so member-side
 *   predicates filter on its fields), plus `_data`, the key of its bytes in
 *   `data`. Each version of the bytes gets a fresh key (`address#uuid`) and
 *   the record is switched to it in one write, so a reader never sees a
 *   record with another version's bytes; the old bytes are deleted after
 *   the switch (a reader that loses that race reads the record again). The
 *   bytes expire a second after their record, so a live record has them.
 * - `branches`: `[executionId, branchPath]` (as JSON) → the branch record;
 *   compare-and-set is `replaceIfSame` with the stored text just read.
 * - `locks`: resource → `{ holder, expireTime }`.
 * Both JSON maps get a hash index on `executionId` at start (a cluster
 * restarted empty lacks it until the next start of a mesh instance).
 *
 * Expiry is Hazelcast's own: every write of a record passes the remaining
 * TTL and the max idle to the member, and every touching read is a member
 * read (which restarts max idle). What Hazelcast 5.6 does, measured against
 * the member (see the tests):
 * - TTL and max idle are kept in whole seconds (a value is truncated: 1.5 s
 *   is 1 s, under 1 s expires at once) and expiration times are rounded down
 *   to the second, so an entry would go up to a second early. We pass
 *   `ceil(ms / 1000) * 1000 + 1000`: entries expire never early and at most
 *   ~1-2 s late. On top, the record's own `expireTime` is checked on every
 *   read (on this instance's clock), so the TTL is exact for callers; only
 *   the physical removal (and its `expired` event) lags. Max idle has the
 *   member's granularity: gone between `maxIdleMs` and ~2 s later.
 * - The TTL counts from the last *write*, and `put`/`set`/`replace`/
 *   `replaceIfSame` without TTL arguments reset TTL and max idle to the map
 *   defaults (forever). So `update` writes with `set(key, value, remaining
 *   TTL, max idle)`, which cannot be conditional: it runs under the key's
 *   map lock (below). `setTtl` keeps max idle as it is and fires no event.
 * - `get`, `getAll` and `containsKey` restart max idle; `getEntryView` and
 *   predicate queries do not. Per-entry statistics are off on a default
 *   member, so the entry view has no last access time: `get` without touch
 *   derives it from the expiration time (`expirationTime - maxIdle`, to the
 *   second; a lower bound when the TTL is the nearer limit). `query` does so
 *   for up to `QUERY_ACCESS_TIMES_LIMIT` results (one call each) and gives
 *   the record's `lastWriteTime` (a lower bound) beyond that.
 * - Entry listeners see every client's changes: added, updated, removed,
 *   expired and evicted (both `expired` here), with the value (or the old
 *   value) when registered with `includeValue`. Queries skip expired entries
 *   without removing them, and `size()` still counts them. The member finds
 *   untouched expired entries by a background task that visits only a few
 *   partitions per 5 s round, so its `expired` event can come a minute or
 *   more late; any keyed access removes an expired entry at once. Hence the
 *   expiry watch (see `sweepExpired`): `expired` events come within ~1-2 s.
 *   Events are lost while the client is disconnected (the client registers
 *   the listener again when it reconnects).
 *
 * Compare-and-set of a record: Hazelcast's `replaceIfSame` is atomic but
 * drops TTL and max idle (and a follow-up `set` would not be conditional),
 * so an update takes the member-side lock of the key (`IMap.tryLock` with a
 * lease), reads the record, checks the revision and writes with `set`, then
 * unlocks. Other clients' writes to a locked key wait on the member. The Node
 * client shares lock ownership among all calls of one client (a second
 * `tryLock` from the same client succeeds), so calls in this process are
 * serialized per address by a local mutex as well (update, create and
 * remove take it). Guarantee: of two writers with the same expected
 * revision exactly one wins, as long as the critical section (bounded by
 * `CRITICAL_SECTION`) ends within the lock's lease (`KEY_LOCK_LEASE_MS`);
 * the lease frees the key if this process dies or loses the cluster
 * mid-way. A lock request that times out here but is granted late on the
 * member keeps the key locked until its lease ends (other instances'
 * writes to that address wait or fail with StoreUnavailable meanwhile).
 * `create` is `putIfAbsent` (an entry past its TTL that the member still
 * holds is evicted under the key lock first, with an `expired` event);
 * `remove` is `remove`.
 *
 * Locks (the `locks` map): taken with `putIfAbsent` (with the lease as TTL),
 * renewed by the holder with `replaceIfSame` + `setTtl`, released with
 * remove-if-equal. The lease is checked against `expireTime` in the value
 * (this instance's clock), so leases below a second work; the TTL only
 * removes what nobody releases. The guarantee is lease-based mutual
 * exclusion among instances whose clocks agree; there are no fencing tokens
 * (the CP subsystem's FencedLock is not in Hazelcast Community 5.5+).
 *
 * Availability: the client starts asynchronously and reconnects by itself,
 * so the layer builds while the cluster is down (only malformed options fail
 * it). Every call is bounded: 3 s per round trip (`OP_TIMEOUT`; an update
 * may wait 2 s more for another instance's key lock, and waiting for earlier
 * calls on the same address is bounded by 3 s too), `ping` 1.5 s. Until it
 * first connects the client refuses calls at once (ClientOfflineError) and
 * after a disconnect it retries them; either way a call goes through if the
 * cluster is back within the bound and fails with StoreUnavailable
 * otherwise. Client errors meaning "offline / disconnected / not active /
 * timed out" become StoreUnavailable; anything else is a defect. A call that
 * timed out may still take effect on the member later.
 */
import { randomUUID } from "node:crypto";
import {
  Cause,
  Clock,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Layer,
  Option,
  PubSub,
  Runtime,
  Schedule,
} from "effect";
import {
  AuthenticationError,
  Client,
  type ClientConfig,
  ClientNotActiveError,
  ClientNotAllowedInClusterError,
  ClientOfflineError,
  type EntryEvent,
  HazelcastInstanceNotActiveError,
  HazelcastJsonValue,
  type IMap,
  IndeterminateOperationStateError,
  type IndexConfig,
  IOError,
  JsonStringDeserializationPolicy,
  NoDataMemberInClusterError,
  OperationTimeoutError,
  type Predicate,
  Predicates,
  ReconnectMode,
  RetryableHazelcastError,
  SplitBrainProtectionError,
  TargetDisconnectedError,
} from "hazelcast-client";
import {
  type BranchRecord,
  type MemoryFilter,
  type MemoryRecord,
  MemoryStore,
  type MemoryStoreShape,
  type StoredEntry,
  type StoreEvent,
  StoreUnavailable,
  type UnlockResult,
} from "./store.js";

export interface HazelcastMemoryStoreOptions {
  /** `host:port` of cluster members (any reachable one is enough). */
  readonly members: ReadonlyArray<string>;
  readonly clusterName: string;
  /** Prefix of the four map names (default `fo.memory.`); lets several stores share a cluster. */
  readonly mapPrefix?: string;
}

/** The options cannot work at all (e.g. a malformed member address): a start-up failure. */
export class HazelcastMemoryStoreConfigError extends Data.TaggedError(
  "HazelcastMemoryStoreConfigError",
)<{
  readonly message: string;
  readonly cause: unknown;
}> {}

const DEFAULT_MAP_PREFIX = "fo.memory.";

/** Bound of every single call to the cluster. */
const OP_TIMEOUT = Duration.seconds(3);
const PING_TIMEOUT = Duration.millis(1_500);
const CLOSE_TIMEOUT = Duration.seconds(5);
/** How long an update waits on the member for another instance's lock of the key. */
const KEY_LOCK_WAIT_MS = 2_000;
/** Lease of the key lock: frees the key if its holder dies; well above CRITICAL_SECTION. */
const KEY_LOCK_LEASE_MS = 15_000;
/** Bound of everything an update does while it holds the key lock. */
const CRITICAL_SECTION = Duration.seconds(8);
/** The bytes outlive their record by this much (TTL and max idle), so a live record never lacks them. */
const DATA_GRACE_MS = 1_000;
/** Events kept for the slowest subscriber (older ones are dropped). */
const EVENT_BUFFER = 16_384;
/** Up to this many query results get their last access time from the member (one call each). */
const QUERY_ACCESS_TIMES_LIMIT = 256;
/** Parallel calls for per-key work (entry views, removals). */
const PARALLEL = 16;
/** How often due expiry checks run, and how many at most per round (see `sweepExpired`). */
const SWEEP_INTERVAL = Duration.millis(500);
const SWEEP_BATCH = 2_000;
/** The one listing of all entries at start (for the expiry watch). */
const LISTING_TIMEOUT = Duration.seconds(30);
/** Attempts of the optimistic loops (reads racing updates, lock takeovers) before giving up. */
const MAX_ATTEMPTS = 5;

/** Hazelcast's "forever" comes back as Long.MAX_VALUE; anything beyond this is "no limit". */
const NO_LIMIT = Number.MAX_SAFE_INTEGER;

/**
 * A duration for the member, which keeps whole seconds (truncating) and
 * rounds expiration times down to the second: rounded up to the second plus
 * one, so the entry lives at least `ms` and at most ~2 s more.
 */
const memberMillis = (ms: number): number => Math.ceil(Math.max(ms, 0) / 1_000) * 1_000 + 1_000;

/** Max idle for the member; 0 (Hazelcast: none) when the record has none. */
const memberMaxIdle = (maxIdleMs: number): number => (maxIdleMs > 0 ? memberMillis(maxIdleMs) : 0);

// ---------------------------------------------------------------------------
// Client errors

const isUnavailable = (e: unknown): boolean =>
  e instanceof ClientOfflineError ||
  e instanceof ClientNotActiveError ||
  e instanceof HazelcastInstanceNotActiveError ||
  e instanceof TargetDisconnectedError ||
  e instanceof IOError ||
  // Member left, partition migrating, target not a member, retryable I/O…
  e instanceof RetryableHazelcastError ||
  e instanceof OperationTimeoutError ||
  e instanceof IndeterminateOperationStateError ||
  e instanceof NoDataMemberInClusterError ||
  e instanceof SplitBrainProtectionError ||
  // Credentials and cluster admission are deployment state, not a bug of the caller.
  e instanceof AuthenticationError ||
  e instanceof ClientNotAllowedInClusterError;

const timedOut = (what: string, after: Duration.Duration) => () =>
  new StoreUnavailable({
    cause: new Error(`Hazelcast ${what} did not answer within ${Duration.format(after)}`),
  });

/** Pause between attempts of a call the client refused for want of a connection. */
const OFFLINE_RETRY = Schedule.spaced(Duration.millis(100));

/**
 * One call to the cluster, bounded in time; everything building the request
 * belongs in `op`. Until its first connection the client refuses calls
 * before sending anything (ClientOfflineError): those are repeated until the
 * bound, so a call made just after start-up goes through, and one made while
 * the cluster is away fails after the bound (as calls after a disconnect do,
 * which the client itself retries).
 */
const call = <A>(
  what: string,
  op: () => Promise<A>,
  timeout: Duration.Duration = OP_TIMEOUT,
): Effect.Effect<A, StoreUnavailable> => {
  let lastError: unknown;
  return Effect.tryPromise({ try: op, catch: (e) => e }).pipe(
    Effect.tapError((e) =>
      Effect.sync(() => {
        lastError = e;
      }),
    ),
    Effect.retry({ schedule: OFFLINE_RETRY, while: (e) => e instanceof ClientOfflineError }),
    Effect.catchAll((e) =>
      isUnavailable(e) ? Effect.fail(new StoreUnavailable({ cause: e })) : Effect.die(e),
    ),
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () =>
        lastError instanceof ClientOfflineError
          ? new StoreUnavailable({ cause: lastError })
          : timedOut(what, timeout)(),
    }),
  );
};

// ---------------------------------------------------------------------------
// Stored form

/** A record as stored in `meta`: the record's fields and the key of its bytes. */
type StoredMeta = MemoryRecord & { readonly _data: string };

interface LockValue {
  readonly holder: string;
  readonly expireTime: number;
}

const json = (value: unknown): HazelcastJsonValue => new HazelcastJsonValue(JSON.stringify(value));

/** A value read back: the client is configured to hand JSON over unparsed. */
const parse = <A>(value: unknown): A => {
  if (value instanceof HazelcastJsonValue) return JSON.parse(value.toString()) as A;
  throw new TypeError(`expected a JSON value in the map, got ${typeof value}`);
};

const recordOf = (meta: StoredMeta): MemoryRecord => {
  const { _data, ...record } = meta;
  return record;
};

const branchKey = (executionId: string, branchPath: string): string =>
  JSON.stringify([executionId, branchPath]);

const newDataKey = (address: string): string => `${address}#${randomUUID()}`;

const asLong = (value: unknown): number => {
  const n = Number(value);
  return Number.isFinite(n) ? n : NO_LIMIT;
};

/**
 * `LIKE` pattern matching `literal` exactly. Hazelcast's LIKE knows only
 * `\%` and `\_` as escapes (a backslash before anything else, itself
 * included, is a plain character), so only the wildcards are escaped.
 */
const likeLiteral = (literal: string): string => literal.replace(/[%_]/g, "\\$&");

const predicateOf = (filter: MemoryFilter): Predicate => {
  const parts: Predicate[] = [];
  const eq = (field: string, value: string | undefined) => {
    if (value !== undefined) parts.push(Predicates.equal(field, value));
  };
  eq("executionId", filter.executionId);
  eq("flowId", filter.flowId);
  eq("owner", filter.owner);
  eq("stepType", filter.stepType);
  const prefix = filter.branchPrefix;
  if (prefix !== undefined) {
    parts.push(
      Predicates.or(
        Predicates.equal("branchPath", prefix),
        Predicates.like("branchPath", `${likeLiteral(prefix)}.%`),
      ),
    );
  }
  const [only] = parts;
  if (parts.length === 0) return Predicates.alwaysTrue();
  if (parts.length === 1 && only !== undefined) return only;
  return Predicates.and(...parts);
};

/** Both JSON maps are queried by execution most of the time. */
const EXECUTION_INDEX: IndexConfig = { type: "HASH", attributes: ["executionId"] };

const CLIENT_PROPERTIES = {
  // The client's own logger writes to the console; reconnect attempts are warnings.
  "hazelcast.logging.level": "ERROR",
  // Bounds an invocation left behind by a call that timed out here.
  "hazelcast.client.invocation.timeout.millis": 10_000,
  "hazelcast.client.heartbeat.interval": 5_000,
  "hazelcast.client.heartbeat.timeout": 15_000,
  "hazelcast.client.statistics.enabled": false,
};

const clientConfig = (options: HazelcastMemoryStoreOptions): ClientConfig => ({
  clusterName: options.clusterName,
  instanceName: `floworchestrator-mesh-memory-${randomUUID().slice(0, 8)}`,
  network: { clusterMembers: [...options.members], connectionTimeout: 3_000 },
  connectionStrategy: {
    // Build without the cluster (calls are refused until it is there, see `call`).
    asyncStart: true,
    reconnectMode: ReconnectMode.ON,
    connectionRetry: {
      initialBackoffMillis: 250,
      maxBackoffMillis: 5_000,
      multiplier: 2,
      jitter: 0.2,
      // Keep trying for ever: the mesh outlives outages of the cluster.
      clusterConnectTimeoutMillis: -1,
    },
  },
  serialization: {
    // Values come back as the exact stored JSON text: compare-and-set passes it back unchanged.
    jsonStringDeserializationPolicy: JsonStringDeserializationPolicy.NO_DESERIALIZATION,
  },
  // Client metrics only feed Management Center.
  metrics: { enabled: false },
  properties: CLIENT_PROPERTIES,
});

/** `host`, `host:port`, `[v6]` or `[v6]:port`, as the client takes them. */
const MEMBER_ADDRESS = /^(?:\[[0-9A-Fa-f:.]+\]|[^\s:[\]]+)(?::(\d{1,5}))?$/;

/** What the client would only find out by failing to connect for ever. */
const checkOptions = (options: HazelcastMemoryStoreOptions) => {
  const bad = options.members.filter((m) => {
    const match = MEMBER_ADDRESS.exec(m);
    const port = match?.[1] === undefined ? 5701 : Number(match[1]);
    return match === null || port < 1 || port > 65_535;
  });
  if (options.members.length === 0 || bad.length > 0 || options.clusterName === "") {
    return Effect.fail(
      new HazelcastMemoryStoreConfigError({
        message:
          options.members.length === 0
            ? "no Hazelcast members given"
            : bad.length > 0
              ? `invalid Hazelcast member address(es): ${bad.map((m) => JSON.stringify(m)).join(", ")}`
              : "the Hazelcast cluster name is empty",
        cause: undefined,
      }),
    );
  }
  return Effect.void;
};

// ---------------------------------------------------------------------------
// The store

const make = (options: HazelcastMemoryStoreOptions) =>
  Effect.gen(function* () {
    const prefix = options.mapPrefix ?? DEFAULT_MAP_PREFIX;
    const names = {
      meta: `${prefix}meta`,
      data: `${prefix}data`,
      branches: `${prefix}branches`,
      locks: `${prefix}locks`,
    };

    yield* checkOptions(options);
    // asyncStart: resolves without I/O; only a configuration the client rejects fails here.
    const client = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => Client.newHazelcastClient(clientConfig(options)),
        catch: (e) =>
          new HazelcastMemoryStoreConfigError({
            message: `invalid Hazelcast client configuration: ${(e as Error).message}`,
            cause: e,
          }),
      }),
      (c) =>
        Effect.tryPromise(() => c.shutdown()).pipe(
          Effect.timeout(CLOSE_TIMEOUT),
          Effect.catchAllCause((cause) =>
            Effect.logWarning("closing the Hazelcast client failed", cause),
          ),
        ),
    );

    // The client caches proxies (and forgets one whose creation failed, e.g. while offline).
    const meta = () => client.getMap<string, HazelcastJsonValue>(names.meta);
    const dataMap = () => client.getMap<string, Buffer>(names.data);
    const branchMap = () => client.getMap<string, HazelcastJsonValue>(names.branches);
    const lockMap = () => client.getMap<string, HazelcastJsonValue>(names.locks);
    const onMeta = <A>(
      what: string,
      op: (m: IMap<string, HazelcastJsonValue>) => Promise<A>,
      timeout?: Duration.Duration,
    ) => call(`meta ${what}`, async () => op(await meta()), timeout);
    const onData = <A>(what: string, op: (m: IMap<string, Buffer>) => Promise<A>) =>
      call(`data ${what}`, async () => op(await dataMap()));
    const onBranches = <A>(what: string, op: (m: IMap<string, HazelcastJsonValue>) => Promise<A>) =>
      call(`branches ${what}`, async () => op(await branchMap()));
    const onLocks = <A>(what: string, op: (m: IMap<string, HazelcastJsonValue>) => Promise<A>) =>
      call(`locks ${what}`, async () => op(await lockMap()));

    /** Best effort: a failure only leaves garbage that expires by itself. */
    const bestEffort = <A>(what: string, effect: Effect.Effect<A, StoreUnavailable>) =>
      effect.pipe(
        Effect.asVoid,
        Effect.catchAllCause((cause) =>
          Effect.logDebug(`memory store (hazelcast): ${what} failed`, cause),
        ),
      );

    // --- Local serialization per address --------------------------------------

    const localLocks = new Map<string, { readonly mutex: Effect.Semaphore; users: number }>();
    /**
     * Runs `effect` alone among this client's calls on `address` (the
     * member's key lock cannot tell them apart). Waiting for the others is
     * bounded too (StoreUnavailable), so calls piling up on one address while
     * the cluster is slow or away do not wait for each other's timeouts.
     */
    const serialized =
      (address: string) =>
      <A, E, R>(effect: Effect.Effect<A, E | StoreUnavailable, R>) =>
        Effect.acquireUseRelease(
          Effect.sync(() => {
            let slot = localLocks.get(address);
            if (slot === undefined) {
              slot = { mutex: Effect.unsafeMakeSemaphore(1), users: 0 };
              localLocks.set(address, slot);
            }
            slot.users++;
            return slot;
          }),
          (slot) =>
            Effect.uninterruptibleMask((restore) =>
              restore(slot.mutex.take(1)).pipe(
                Effect.timeoutFail({
                  duration: OP_TIMEOUT,
                  onTimeout: () =>
                    new StoreUnavailable({
                      cause: new Error(
                        `earlier calls on ${address} still running after ${Duration.format(OP_TIMEOUT)}`,
                      ),
                    }),
                }),
                Effect.zipRight(restore(effect).pipe(Effect.ensuring(slot.mutex.release(1)))),
              ),
            ),
          (slot) =>
            Effect.sync(() => {
              if (--slot.users === 0) localLocks.delete(address);
            }),
        );

    /** Runs `effect` holding the member-side lock of the record's key (see the module comment). */
    const withKeyLock = <A>(
      address: string,
      effect: Effect.Effect<A, StoreUnavailable>,
    ): Effect.Effect<A, StoreUnavailable> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          const locked = yield* restore(
            onMeta(
              "tryLock",
              (m) => m.tryLock(address, KEY_LOCK_WAIT_MS, KEY_LOCK_LEASE_MS),
              Duration.sum(OP_TIMEOUT, Duration.millis(KEY_LOCK_WAIT_MS)),
            ),
          );
          if (!locked) {
            return yield* Effect.fail(
              new StoreUnavailable({
                cause: new Error(
                  `${address} stayed locked by another mesh instance for ${KEY_LOCK_WAIT_MS} ms`,
                ),
              }),
            );
          }
          return yield* restore(
            effect.pipe(
              Effect.timeoutFail({
                duration: CRITICAL_SECTION,
                onTimeout: timedOut("update", CRITICAL_SECTION),
              }),
            ),
          ).pipe(
            Effect.ensuring(
              bestEffort(
                "unlock",
                onMeta("unlock", (m) => m.unlock(address)),
              ),
            ),
          );
        }),
      );

    // --- Events -----------------------------------------------------------------

    const pubsub = yield* Effect.acquireRelease(
      PubSub.sliding<StoreEvent>(EVENT_BUFFER),
      PubSub.shutdown,
    );
    const runtime = yield* Effect.runtime<never>();
    const clock = yield* Effect.clock;
    let closed = false;
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true;
      }),
    );

    const now = Clock.currentTimeMillis;

    /**
     * Expiry watch. The member's own task may report an untouched expired
     * entry a minute or more late (it visits min(27, 3 × partition threads)
     * of the 271 partitions per 5 s round), but any keyed access finds an
     * expired entry at once and expires it (removal and `expired` event, as
     * usual). So each store tracks the live entries it has heard of (from
     * the events, and one listing at start) with the earliest time each may
     * expire, and then looks at it with `getEntryView` (which does not touch
     * it): gone means expired by the member just now; still there gives the
     * member's own expiration time, the next time to look. Every instance
     * does this for every entry: one call per entry and instance per expiry
     * (and per max idle renewal by reads). Entries created while this client
     * was disconnected are left to the member's task.
     */
    const expiryChecks = new Map<string, number>();
    const watchExpiry = (record: MemoryRecord, at: number) => {
      expiryChecks.set(
        record.address,
        Math.min(record.expireTime, record.maxIdleMs > 0 ? at + record.maxIdleMs : NO_LIMIT),
      );
    };

    const checkExpiry = (address: string) =>
      onMeta("getEntryView", (m) => m.getEntryView(address)).pipe(
        Effect.flatMap((view) =>
          Effect.sync(() => {
            if (view === null) expiryChecks.delete(address);
            // `expirationTime` is inclusive: gone from that millisecond on.
            else if (expiryChecks.has(address)) {
              expiryChecks.set(address, asLong(view.expirationTime));
            }
          }),
        ),
      );

    const sweepExpired = Effect.gen(function* () {
      const at = yield* now;
      const due: string[] = [];
      for (const [address, checkAt] of expiryChecks) {
        if (checkAt <= at) due.push(address);
        if (due.length >= SWEEP_BATCH) break;
      }
      yield* Effect.forEach(due, checkExpiry, { concurrency: PARALLEL, discard: true });
    }).pipe(
      Effect.catchAllCause((cause) =>
        Effect.logDebug("memory store (hazelcast): expiry check failed", cause),
      ),
    );

    /** The bytes of an entry that expired, removed now rather than when the member gets round to them. */
    const dropBytes = (dataKey: string) =>
      Runtime.runFork(runtime)(
        bestEffort(
          "deleting the bytes of an expired entry",
          onData("delete", (m) => m.delete(dataKey)),
        ),
      );

    const publish = (type: StoreEvent["type"], event: EntryEvent<string, HazelcastJsonValue>) => {
      if (closed) return;
      const value = type === "created" || type === "updated" ? event.value : event.oldValue;
      let stored: StoredMeta | undefined;
      try {
        stored = value == null ? undefined : parse<StoredMeta>(value);
      } catch {
        stored = undefined; // not ours: still report the change of the key
      }
      const time = clock.unsafeCurrentTimeMillis();
      if (type === "created" || type === "updated") {
        if (stored !== undefined) watchExpiry(stored, time);
      } else {
        expiryChecks.delete(event.key);
        if (type === "expired" && stored !== undefined) dropBytes(stored._data);
      }
      const storeEvent: StoreEvent = {
        type,
        address: event.key,
        ...(stored === undefined ? {} : { record: recordOf(stored) }),
        time,
      };
      const exit = Runtime.runSyncExit(runtime)(PubSub.publish(pubsub, storeEvent));
      if (Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)) {
        Runtime.runFork(runtime)(
          Effect.logWarning("memory store: publishing an event failed", exit.cause),
        );
      }
    };

    /** Completed once the meta map's listener is registered (one per layer, re-registered by the client on reconnect). */
    const listening = yield* Deferred.make<void>();
    yield* onMeta("addEntryListener", (m) =>
      m.addEntryListener(
        {
          added: (e) => publish("created", e),
          updated: (e) => publish("updated", e),
          removed: (e) => publish("removed", e),
          expired: (e) => publish("expired", e),
          evicted: (e) => publish("expired", e),
        },
        undefined,
        true,
      ),
    ).pipe(
      Effect.tap(() => Deferred.succeed(listening, undefined)),
      Effect.tapError((e) =>
        Effect.logDebug("memory store (hazelcast): listener not registered yet", e.cause),
      ),
      // The cluster may be down at start: keep trying in the background until it is there.
      Effect.retry(
        Schedule.exponential(Duration.millis(250)).pipe(
          Schedule.union(Schedule.spaced(Duration.seconds(5))),
        ),
      ),
      // Lookups by execution (listings, clean-ups, merges) from an index rather than a scan.
      Effect.zipRight(
        Effect.all(
          [
            onMeta("addIndex", (m) => m.addIndex(EXECUTION_INDEX)),
            onBranches("addIndex", (m) => m.addIndex(EXECUTION_INDEX)),
          ],
          { discard: true },
        ).pipe(
          Effect.catchAllCause((cause) =>
            Effect.logWarning("memory store (hazelcast): adding indexes failed", cause),
          ),
        ),
      ),
      // Entries from before: their expiry is watched too (listed once; a failure leaves them to the member).
      Effect.zipRight(
        onMeta(
          "valuesWithPredicate",
          (m) => m.valuesWithPredicate(Predicates.alwaysTrue()).then((list) => list.toArray()),
          LISTING_TIMEOUT,
        ).pipe(
          Effect.flatMap((values) =>
            Effect.sync(() => {
              // How long they have been idle is unknown: look at each one soon.
              const at = clock.unsafeCurrentTimeMillis();
              for (const v of values) {
                try {
                  const { address } = parse<StoredMeta>(v);
                  if (!expiryChecks.has(address)) expiryChecks.set(address, at);
                } catch {
                  // not ours
                }
              }
            }),
          ),
          Effect.catchAllCause((cause) =>
            Effect.logDebug("memory store (hazelcast): listing entries at start failed", cause),
          ),
        ),
      ),
      Effect.zipRight(Effect.repeat(sweepExpired, Schedule.spaced(SWEEP_INTERVAL))),
      Effect.forkScoped,
    );

    // --- Entries ------------------------------------------------------------------

    /** The record behind a stored value, unless its TTL has run out (the member removes it a little later). */
    const liveMeta = (raw: HazelcastJsonValue | null, at: number): StoredMeta | undefined => {
      if (raw === null) return undefined;
      const stored = parse<StoredMeta>(raw);
      return at < stored.expireTime ? stored : undefined;
    };

    const getUntouched = (address: string) =>
      Effect.gen(function* () {
        const view = yield* onMeta("getEntryView", (m) => m.getEntryView(address));
        const at = yield* now;
        const stored = liveMeta(view?.value ?? null, at);
        if (view === null || stored === undefined) return Option.none<StoredEntry>();
        // No per-entry statistics on a default member: derived from the expiration (see top).
        const maxIdle = asLong(view.maxIdle);
        const fromIdle =
          maxIdle > 0 && maxIdle < NO_LIMIT ? asLong(view.expirationTime) - maxIdle : 0;
        const lastAccessTime = Math.max(
          asLong(view.lastAccessTime) < NO_LIMIT ? asLong(view.lastAccessTime) : 0,
          asLong(view.lastUpdateTime) < NO_LIMIT ? asLong(view.lastUpdateTime) : 0,
          fromIdle,
          stored.lastWriteTime,
        );
        return Option.some<StoredEntry>({
          record: recordOf(stored),
          lastAccessTime: Math.min(lastAccessTime, at),
        });
      });

    const getTouched = (address: string) =>
      Effect.gen(function* () {
        const stored = liveMeta(yield* onMeta("get", (m) => m.get(address)), yield* now);
        if (stored === undefined) return Option.none<StoredEntry>();
        // Keep the bytes' max idle in step with the record's.
        yield* onData("containsKey", (m) => m.containsKey(stored._data));
        return Option.some<StoredEntry>({ record: recordOf(stored), lastAccessTime: yield* now });
      });

    const read = (address: string) =>
      Effect.gen(function* () {
        let previousKey: string | undefined;
        for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
          const stored = liveMeta(yield* onMeta("get", (m) => m.get(address)), yield* now);
          if (stored === undefined) return Option.none();
          const bytes = yield* onData("get", (m) => m.get(stored._data));
          if (bytes !== null) {
            return Option.some({
              entry: { record: recordOf(stored), lastAccessTime: yield* now },
              data: new Uint8Array(bytes),
            });
          }
          // Replaced by an update since the record was read: read the new one. The
          // same key twice: the bytes are gone with an entry at the end of its life.
          if (stored._data === previousKey) return Option.none();
          previousKey = stored._data;
        }
        return Option.none();
      });

    /** Writes the bytes of a record version under a fresh key; expiring a little after the record. */
    const putData = (record: MemoryRecord, data: Uint8Array, at: number) => {
      const key = newDataKey(record.address);
      return onData("set", (m) =>
        m.set(
          key,
          Buffer.from(data),
          memberMillis(record.expireTime - at + DATA_GRACE_MS),
          memberMaxIdle(record.maxIdleMs > 0 ? record.maxIdleMs + DATA_GRACE_MS : 0),
        ),
      ).pipe(Effect.as(key));
    };

    const create = (record: MemoryRecord) =>
      serialized(record.address)(
        Effect.gen(function* () {
          const address = record.address;
          const at = yield* now;
          // The bytes first, under a key nobody else knows: the record is complete once visible.
          const dataKey = yield* putData(record, new Uint8Array(0), at);
          const value = json({ ...record, _data: dataKey } satisfies StoredMeta);
          const ttl = memberMillis(record.expireTime - at);
          const maxIdle = memberMaxIdle(record.maxIdleMs);
          const putIfAbsent = onMeta("putIfAbsent", (m) =>
            m.putIfAbsent(address, value, ttl, maxIdle),
          );
          let existing = yield* putIfAbsent;
          if (existing !== null && liveMeta(existing, at) === undefined) {
            // Past its TTL but not yet removed by the member: expire it now (an `expired`
            // event, like the member's own), then take the address.
            existing = yield* withKeyLock(
              address,
              Effect.gen(function* () {
                const current = yield* onMeta("get", (m) => m.get(address));
                if (current !== null && liveMeta(current, yield* now) !== undefined) return current;
                if (current !== null) {
                  yield* onMeta("evict", (m) => m.evict(address));
                  yield* bestEffort(
                    "deleting the bytes of an expired entry",
                    onData("delete", (m) => m.delete(parse<StoredMeta>(current)._data)),
                  );
                }
                return yield* putIfAbsent;
              }),
            );
          }
          if (existing === null) return true;
          yield* bestEffort(
            "deleting unused bytes",
            onData("delete", (m) => m.delete(dataKey)),
          );
          return false;
        }),
      );

    const update = (
      address: string,
      expectedRevision: number,
      record: MemoryRecord,
      data?: Uint8Array,
    ) =>
      record.address !== address
        ? Effect.dieMessage(`update of ${address} must not change its address`)
        : serialized(address)(
            withKeyLock(
              address,
              Effect.gen(function* () {
                // Not touching: a lost compare-and-set is no access (a won one writes anyway).
                const view = yield* onMeta("getEntryView", (m) => m.getEntryView(address));
                const stored = liveMeta(view?.value ?? null, yield* now);
                if (stored === undefined || stored.revision !== expectedRevision) return false;
                const at = yield* now;
                // The TTL still counts from allocation: only what remains of it.
                const ttl = memberMillis(record.expireTime - at);
                const maxIdle = memberMaxIdle(record.maxIdleMs);
                const dataKey =
                  data === undefined ? stored._data : yield* putData(record, data, at);
                if (data === undefined) {
                  // The bytes stay; restart their max idle with the record's.
                  yield* onData("containsKey", (m) => m.containsKey(stored._data));
                }
                const value = json({ ...record, _data: dataKey } satisfies StoredMeta);
                yield* onMeta("set", (m) => m.set(address, value, ttl, maxIdle));
                if (dataKey !== stored._data) {
                  yield* bestEffort(
                    "deleting replaced bytes",
                    onData("delete", (m) => m.delete(stored._data)),
                  );
                }
                return true;
              }),
            ),
          );

    const remove = (address: string) =>
      serialized(address)(
        Effect.gen(function* () {
          const old = yield* onMeta("remove", (m) => m.remove(address));
          if (old === null || typeof old === "boolean") return false;
          const stored = parse<StoredMeta>(old);
          yield* bestEffort(
            "deleting removed bytes",
            onData("delete", (m) => m.delete(stored._data)),
          );
          // Past its TTL it was not there any more for callers.
          return (yield* now) < stored.expireTime;
        }),
      );

    const query = (filter: MemoryFilter) =>
      Effect.gen(function* () {
        const predicate = predicateOf(filter);
        const values = yield* onMeta("valuesWithPredicate", (m) =>
          m.valuesWithPredicate(predicate).then((list) => list.toArray()),
        );
        const at = yield* now;
        const live = values.flatMap((v) => {
          const stored = liveMeta(v, at);
          return stored === undefined ? [] : [stored];
        });
        if (live.length > QUERY_ACCESS_TIMES_LIMIT) {
          // Too many for one call each: the last write, a lower bound of the last access.
          return live.map(
            (s): StoredEntry => ({ record: recordOf(s), lastAccessTime: s.lastWriteTime }),
          );
        }
        const found = yield* Effect.forEach(live, (s) => getUntouched(s.address), {
          concurrency: PARALLEL,
        });
        return found.flatMap(Option.toArray);
      });

    // --- Branches -------------------------------------------------------------------

    const branches: MemoryStoreShape["branches"] = {
      get: (executionId, branchPath) =>
        onBranches("get", (m) => m.get(branchKey(executionId, branchPath))).pipe(
          Effect.map((raw) =>
            raw === null ? Option.none() : Option.some(parse<BranchRecord>(raw)),
          ),
        ),
      create: (record) =>
        onBranches("putIfAbsent", (m) =>
          m.putIfAbsent(branchKey(record.executionId, record.branchPath), json(record)),
        ).pipe(Effect.map((existing) => existing === null)),
      update: (expectedRevision, record) =>
        Effect.gen(function* () {
          const key = branchKey(record.executionId, record.branchPath);
          const current = yield* onBranches("get", (m) => m.get(key));
          if (current === null || parse<BranchRecord>(current).revision !== expectedRevision) {
            return false;
          }
          // Atomic on the member: compares the stored bytes with the text just read.
          return yield* onBranches("replaceIfSame", (m) =>
            m.replaceIfSame(key, current, json(record)),
          );
        }),
      list: (executionId) =>
        onBranches("valuesWithPredicate", (m) =>
          m
            .valuesWithPredicate(Predicates.equal("executionId", executionId))
            .then((list) => list.toArray()),
        ).pipe(
          Effect.map((values) =>
            values
              .map((v) => parse<BranchRecord>(v))
              .sort((a, b) =>
                a.branchPath < b.branchPath ? -1 : a.branchPath > b.branchPath ? 1 : 0,
              ),
          ),
        ),
      removeExecution: (executionId) =>
        Effect.gen(function* () {
          const keys = yield* onBranches("keySetWithPredicate", (m) =>
            m.keySetWithPredicate(Predicates.equal("executionId", executionId)),
          );
          const removed = yield* Effect.forEach(
            keys,
            (key) => onBranches("remove", (m) => m.remove(key)),
            { concurrency: PARALLEL },
          );
          // Counted by what this call removed: a concurrent remover's share is not counted twice.
          return removed.filter((old) => old !== null && old !== false).length;
        }),
    };

    // --- Locks ------------------------------------------------------------------------

    const tryLock = (resource: string, holder: string, leaseMs: number) =>
      Effect.gen(function* () {
        let last: LockValue | undefined;
        for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
          const at = yield* now;
          const mine: LockValue = { holder, expireTime: at + leaseMs };
          const ttl = memberMillis(leaseMs);
          const existing = yield* onLocks("putIfAbsent", (m) =>
            m.putIfAbsent(resource, json(mine), ttl),
          );
          if (existing === null) return { acquired: true, expireTime: mine.expireTime };
          const current = parse<LockValue>(existing);
          last = current;
          if (current.expireTime <= at) {
            // Lapsed but not yet removed by the member: remove exactly that value, try again.
            yield* onLocks("remove", (m) => m.remove(resource, existing));
            continue;
          }
          if (current.holder !== holder) return { acquired: false, expireTime: current.expireTime };
          // Renewal: replace exactly the value read (atomic), then the TTL that replace dropped.
          if (
            yield* onLocks("replaceIfSame", (m) => m.replaceIfSame(resource, existing, json(mine)))
          ) {
            // Should this fail, the value's expireTime still ends the lease; only the cleanup waits.
            yield* bestEffort(
              "renewing a lock's TTL",
              onLocks("setTtl", (m) => m.setTtl(resource, ttl)),
            );
            return { acquired: true, expireTime: mine.expireTime };
          }
        }
        // Contended throughout: somebody else keeps changing it.
        return { acquired: false, expireTime: last?.expireTime ?? (yield* now) };
      });

    const unlock = (resource: string, holder: string) =>
      Effect.gen(function* () {
        for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
          const existing = yield* onLocks("get", (m) => m.get(resource));
          if (existing === null) return "missing" as UnlockResult;
          const current = parse<LockValue>(existing);
          if (current.expireTime <= (yield* now)) {
            // Lapsed: nobody holds it; removing exactly that value changes nothing for anyone.
            yield* bestEffort(
              "removing a lapsed lock",
              onLocks("remove", (m) => m.remove(resource, existing)),
            );
            return "missing" as UnlockResult;
          }
          if (current.holder !== holder) return "others" as UnlockResult;
          if (yield* onLocks("remove", (m) => m.remove(resource, existing))) {
            return "unlocked" as UnlockResult;
          }
          // Renewed or lapsed meanwhile: look again.
        }
        return yield* Effect.fail(
          new StoreUnavailable({ cause: new Error(`the lock on ${resource} kept changing`) }),
        );
      });

    const store: MemoryStoreShape = {
      backend: "hazelcast",
      ping: Effect.suspend(() =>
        client.getLifecycleService().isRunning()
          ? call("ping", async () => (await lockMap()).containsKey("\u0000ping"), PING_TIMEOUT)
          : Effect.fail(
              new StoreUnavailable({ cause: new Error("the Hazelcast client is shut down") }),
            ),
      ).pipe(Effect.asVoid),
      create,
      get: (address, touch) => (touch ? getTouched(address) : getUntouched(address)),
      read,
      update,
      remove,
      query,
      subscribe: Deferred.await(listening).pipe(
        Effect.timeoutFail({
          duration: OP_TIMEOUT,
          onTimeout: () =>
            new StoreUnavailable({
              cause: new Error("the Hazelcast entry listener is not registered yet"),
            }),
        }),
        Effect.zipRight(PubSub.subscribe(pubsub)),
      ),
      branches,
      tryLock,
      unlock,
    };
    return store;
  });

export const HazelcastMemoryStore = {
  /**
   * The store; builds without waiting for the cluster (so also while it is
   * down). The client shuts down on release.
   */
  layer: (
    options: HazelcastMemoryStoreOptions,
  ): Layer.Layer<MemoryStore, HazelcastMemoryStoreConfigError> =>
    Layer.scoped(MemoryStore, make(options)),
};
