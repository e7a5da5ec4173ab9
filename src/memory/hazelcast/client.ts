/**
 * The connection to the cluster: the options and the client's
 * configuration, and every call to a map of the store.
 *
 * Availability: the client starts asynchronously and reconnects by itself,
 * so the layer builds while the cluster is down (only malformed options fail
 * it). Every call is bounded: 3 s per round trip (`OP_TIMEOUT`; an update
 * may wait 2 s more for another instance's key lock, and waiting for earlier
 * calls on the same address is bounded by 3 s too), `ping` 1.5 s. Until it
 * first connects the client refuses calls at once (ClientOfflineError) and
 * after a disconnect it retries them; either way a call goes through if the
 * cluster is back within the bound and fails with StoreUnavailable
 * otherwise. Once the cluster is known to be lost, though (the client lost
 * its connection, or the health ping failed), every call fails with
 * StoreUnavailable at once until it is back (`Reachability`): the client
 * itself keeps reconnecting, so waiting out the bound would only hold
 * callers up to their deadlines. Client errors meaning "offline / disconnected / not active /
 * timed out" become StoreUnavailable; anything else is a defect. A call that
 * timed out may still take effect on the member later.
 */
import { randomUUID } from "node:crypto";
import { Data, Duration, Effect, Runtime, type Scope } from "effect";
import {
  AuthenticationError,
  Client,
  type ClientConfig,
  ClientNotActiveError,
  ClientNotAllowedInClusterError,
  ClientOfflineError,
  HazelcastInstanceNotActiveError,
  type HazelcastJsonValue,
  type IMap,
  IndeterminateOperationStateError,
  IOError,
  JsonStringDeserializationPolicy,
  LifecycleState,
  NoDataMemberInClusterError,
  OperationTimeoutError,
  ReconnectMode,
  RetryableHazelcastError,
  SplitBrainProtectionError,
  TargetDisconnectedError,
} from "hazelcast-client";
import { boundedCall } from "../../common/bounded.js";
import { StoreUnavailable } from "../store.js";

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
export const OP_TIMEOUT = Duration.seconds(3);
const PING_TIMEOUT = Duration.millis(1_500);
const CLOSE_TIMEOUT = Duration.seconds(5);
/** Parallel calls for per-key work (entry views, removals). */
export const PARALLEL = 16;
/** Attempts of the optimistic loops (reads racing updates, lock takeovers) before giving up. */
export const MAX_ATTEMPTS = 5;

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

export const timedOut = (what: string, after: Duration.Duration) => () =>
  new StoreUnavailable({
    cause: new Error(`Hazelcast ${what} did not answer within ${Duration.format(after)}`),
  });

/** Pause between attempts of a call the client refused for want of a connection. */
const OFFLINE_RETRY_MS = 100;

/** Until its first connection the client refuses calls: those are tried again after this. */
const offlineRetry = (error: unknown) =>
  error instanceof ClientOfflineError ? OFFLINE_RETRY_MS : undefined;

const unavailableOrDefect = (error: unknown) =>
  error instanceof StoreUnavailable
    ? Effect.fail(error)
    : isUnavailable(error)
      ? Effect.fail(new StoreUnavailable({ cause: error }))
      : Effect.die(error);

/**
 * One call to the cluster, bounded in time; everything building the request
 * belongs in `op`. Until its first connection the client refuses calls
 * before sending anything (ClientOfflineError): those are repeated until the
 * bound, so a call made just after start-up goes through, and one made while
 * the cluster is away fails after the bound (as calls after a disconnect do,
 * which the client itself retries). The client's calls take no signal:
 * interrupted or timed out, a call stops its retries; what was sent may
 * still take effect.
 */
const call = <A>(
  what: string,
  op: () => Promise<A>,
  timeout: Duration.Duration = OP_TIMEOUT,
): Effect.Effect<A, StoreUnavailable> =>
  boundedCall({
    op,
    abortable: false,
    timeout,
    onTimeout: (lastError) =>
      lastError instanceof ClientOfflineError
        ? new StoreUnavailable({ cause: lastError })
        : timedOut(what, timeout)(),
    onError: unavailableOrDefect,
    retryAfter: offlineRetry,
  });

/** Best effort: a failure only leaves garbage that expires by itself. */
export const bestEffort = <A>(what: string, effect: Effect.Effect<A, StoreUnavailable>) =>
  effect.pipe(
    Effect.asVoid,
    Effect.catchAllCause((cause) =>
      Effect.logDebug(`memory store (hazelcast): ${what} failed`, cause),
    ),
  );

// ---------------------------------------------------------------------------
// Configuration

const CLIENT_PROPERTIES = {
  // The client's own logger writes to the console; reconnect attempts are warnings.
  "hazelcast.logging.level": "ERROR",
  // Bounds an invocation left behind by a call that timed out here.
  "hazelcast.client.invocation.timeout.millis": 10_000,
  "hazelcast.client.heartbeat.interval": 5_000,
  "hazelcast.client.heartbeat.timeout": 15_000,
  "hazelcast.client.statistics.enabled": false,
};

const clientConfig = (
  options: HazelcastMemoryStoreOptions,
  reachability: Reachability,
): ClientConfig => ({
  clusterName: options.clusterName,
  lifecycleListeners: [reachability.onLifecycle],
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

/**
 * Whether the cluster is known to be unreachable: the client was connected
 * and lost its last connection (DISCONNECTED), until it is connected again
 * (CONNECTED, also to a restarted cluster); or the last health ping failed,
 * until one succeeds (or the client connects again). Before the first
 * connection nothing is known (start-up keeps the `call` behaviour above).
 *
 * Found by test/faults/hazelcast.test.ts: with the member killed, every call
 * waited out OP_TIMEOUT (3 s) while the client retried it, so callers with
 * a shorter deadline got DEADLINE_EXCEEDED instead of UNAVAILABLE. The ping
 * counts too because the client does not always notice: when a write hits
 * the dead member's reset before a read does, hazelcast-client 5.6 destroys
 * the socket without closing its connection, which then stays "active"
 * (retrying every call on it) until the heartbeat timeout, 15 s later.
 */
interface Reachability {
  readonly onLifecycle: (state: LifecycleState) => void;
  /** The connection is known lost (the ping then fails at once too). */
  readonly disconnected: () => StoreUnavailable | undefined;
  /** Why store calls fail at once now, if they do. */
  readonly lost: () => StoreUnavailable | undefined;
  readonly pinged: (ok: boolean) => void;
}

const makeReachability = (): Reachability => {
  let disconnectedSince: number | undefined;
  let pingFailedSince: number | undefined;
  const unreachable = (since: number, why: string) =>
    new StoreUnavailable({
      cause: new Error(
        `the Hazelcast cluster has been unreachable since ${new Date(since).toISOString()} (${why})`,
      ),
    });
  const disconnected = () =>
    disconnectedSince === undefined
      ? undefined
      : unreachable(disconnectedSince, "the client is reconnecting");
  return {
    onLifecycle: (state) => {
      if (state === LifecycleState.DISCONNECTED) disconnectedSince = Date.now();
      else if (state === LifecycleState.CONNECTED) {
        disconnectedSince = undefined;
        pingFailedSince = undefined;
      }
    },
    disconnected,
    lost: () =>
      disconnected() ??
      (pingFailedSince === undefined
        ? undefined
        : unreachable(pingFailedSince, "the health ping fails")),
    pinged: (ok) => {
      if (ok) pingFailedSince = undefined;
      else pingFailedSince ??= Date.now();
    },
  };
};

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
// The maps

/** One bounded call (see `call`) on a map of the store; `op` builds and sends the request. */
export type OnMap<V> = <A>(
  what: string,
  op: (map: IMap<string, V>) => Promise<A>,
  timeout?: Duration.Duration,
) => Effect.Effect<A, StoreUnavailable>;

/** The store's four maps on a connected (or connecting) client. */
export interface Cluster {
  /** address → the record (JSON) and the key of its bytes. */
  readonly onMeta: OnMap<HazelcastJsonValue>;
  /** key of a version's bytes → the bytes. */
  readonly onData: OnMap<Buffer>;
  /**
   * Sends a call on `meta` and `data` and does not wait for it; a failure
   * is logged (at debug). For what a failure only leaves to expire by
   * itself, where the answer would cost the caller a fiber step and a round
   * trip (the unlock after a change).
   */
  readonly fire: (
    what: string,
    op: (meta: IMap<string, HazelcastJsonValue>, data: IMap<string, Buffer>) => Promise<unknown>,
  ) => void;
  readonly onBranches: OnMap<HazelcastJsonValue>;
  readonly onLocks: OnMap<HazelcastJsonValue>;
  readonly ping: Effect.Effect<void, StoreUnavailable>;
}

/** The client of one store, shut down with the scope. */
export const connect = (
  options: HazelcastMemoryStoreOptions,
): Effect.Effect<Cluster, HazelcastMemoryStoreConfigError, Scope.Scope> =>
  Effect.gen(function* () {
    const prefix = options.mapPrefix ?? DEFAULT_MAP_PREFIX;

    yield* checkOptions(options);
    const runtime = yield* Effect.runtime<never>();
    const reachability = makeReachability();
    // asyncStart: resolves without I/O; only a configuration the client rejects fails here.
    const client = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => Client.newHazelcastClient(clientConfig(options, reachability)),
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

    // The client caches proxies (and forgets one whose creation failed, e.g. while offline);
    // once one is made it is kept here, so a call does not wait a promise for it.
    const proxies = new Map<string, IMap<string, unknown>>();
    const map = <V>(name: string): IMap<string, V> | Promise<IMap<string, V>> => {
      const made = proxies.get(name);
      if (made !== undefined) return made as IMap<string, V>;
      return client.getMap<string, V>(`${prefix}${name}`).then((m) => {
        proxies.set(name, m as IMap<string, unknown>);
        return m;
      });
    };
    /** `op` on the map, looked up at each attempt (a failed proxy creation is made again). */
    const withMap =
      <V, A>(name: string, op: (map: IMap<string, V>) => Promise<A>) =>
      () => {
        const m = map<V>(name);
        return m instanceof Promise ? m.then(op) : op(m);
      };
    /** Refused at once while the cluster is known unreachable (checked as the call starts). */
    const on =
      <V>(name: string): OnMap<V> =>
      (what, op, timeout) => {
        const attempt = withMap(name, op);
        return call(
          `${name} ${what}`,
          () => {
            const lost = reachability.lost();
            return lost === undefined ? attempt() : Promise.reject(lost);
          },
          timeout,
        );
      };

    return {
      onMeta: on<HazelcastJsonValue>("meta"),
      onData: on<Buffer>("data"),
      fire: (what, op) => {
        const failed = (cause: unknown) =>
          Runtime.runFork(runtime)(
            Effect.logDebug(`memory store (hazelcast): ${what} failed`, cause),
          );
        const meta = map<HazelcastJsonValue>("meta");
        const data = map<Buffer>("data");
        try {
          const sent =
            meta instanceof Promise || data instanceof Promise
              ? Promise.all([meta, data]).then(([m, d]) => op(m, d))
              : op(meta, data);
          sent.then(undefined, failed);
        } catch (cause) {
          failed(cause);
        }
      },
      onBranches: on<HazelcastJsonValue>("branches"),
      onLocks: on<HazelcastJsonValue>("locks"),
      // Not held back by a failed ping (it is what finds the cluster back), only by a lost connection.
      ping: Effect.suspend(() => {
        if (!client.getLifecycleService().isRunning()) {
          return Effect.fail(
            new StoreUnavailable({ cause: new Error("the Hazelcast client is shut down") }),
          );
        }
        const disconnected = reachability.disconnected();
        return disconnected === undefined
          ? call("ping", async () => (await map("locks")).containsKey("\u0000ping"), PING_TIMEOUT)
          : Effect.fail(disconnected);
      }).pipe(
        Effect.tap(() => Effect.sync(() => reachability.pinged(true))),
        Effect.tapError(() => Effect.sync(() => reachability.pinged(false))),
        Effect.asVoid,
      ),
    };
  });
