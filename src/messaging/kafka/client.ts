/**
 * The kafkajs client of one MessageLog: the options, the client's
 * configuration, its log, and bounded calls whose failures are
 * StoreUnavailable.
 *
 * Availability: nothing connects when the layer is built. Every call first
 * connects (a no-op while connected; kafkajs reconnects a dropped broker on
 * the next request) and is bounded twice: kafkajs retries at most
 * `CLIENT_RETRY` (about 2.5 s against a refused connection), and the call
 * itself by its timeout. Any failure or timeout is StoreUnavailable, so a
 * call made while the cluster is away fails within its bound and one made
 * once it is back goes through. A call that timed out may still take effect
 * on the broker later (kafkajs finishes or abandons it in the background).
 */
import { Data, Duration, Effect, Runtime } from "effect";
import {
  type Consumer,
  Kafka,
  type KafkaConfig,
  type LogEntry,
  logLevel,
  type RetryOptions,
} from "kafkajs";
import { boundedCall } from "../../common/bounded.js";
import { type PartitionLag, StoreUnavailable } from "../log.js";

export interface KafkaMessageLogOptions {
  /** `host:port` of bootstrap brokers (any reachable one is enough). */
  readonly brokers: ReadonlyArray<string>;
  /** Client id on the brokers; also the prefix of the throwaway groups `read` joins. */
  readonly clientId: string;
  /** Partitions of a topic `ensureTopics` creates. */
  readonly partitions: number;
  /** Replication factor of a topic `ensureTopics` creates; -1 takes the broker's default. */
  readonly replicationFactor: number;
  /** `retention.ms` of a topic `ensureTopics` creates. */
  readonly retentionMs: number;
  /** Bound of `append`, `ensureTopics` and `commit`. */
  readonly sendTimeoutMs: number;
  /**
   * Largest record (value and headers) the bus appends, default 1 MiB. The
   * topics' `max.message.bytes` is set from it (at least 4 MiB), and
   * `append` sends at most half of that per request.
   */
  readonly maxRecordBytes?: number;
}

/** The options cannot work at all (e.g. no broker, a malformed address): a start-up failure. */
export class KafkaMessageLogConfigError extends Data.TaggedError("KafkaMessageLogConfigError")<{
  readonly message: string;
  readonly cause: unknown;
}> {}

const MIB = 1024 * 1024;
const DEFAULT_MAX_RECORD_BYTES = MIB;

/** Bound of `ping`. */
export const PING_TIMEOUT = Duration.millis(2_000);
/** Bound of leaving the cluster (consumers leave their group first). */
export const CLOSE_TIMEOUT = Duration.seconds(10);
/** Bound of joining a group until the first assignment was handed to `onAssigned`. */
export const JOIN_TIMEOUT = Duration.seconds(30);
/**
 * Bound of `read`: it joins a throwaway group (the broker delays a new
 * group's first rebalance by `group.initial.rebalance.delay.ms`, 3 s by
 * default) and fetches until the page is full.
 */
export const READ_TIMEOUT = Duration.seconds(30);

/**
 * Retries of one kafkajs operation: 100 ms doubling to 1 s, 5 times. A dead
 * broker refuses at once, so an operation gives up after about 2.5 s.
 */
export const CLIENT_RETRY: RetryOptions = {
  initialRetryTime: 100,
  maxRetryTime: 1_000,
  multiplier: 2,
  factor: 0.2,
  retries: 5,
};

/**
 * Retries of a consumer's loop (fetch, join, commit) before it restarts
 * itself (leaving and joining its group again): a bit more patient.
 */
export const CONSUMER_RETRY: RetryOptions = {
  initialRetryTime: 300,
  maxRetryTime: 3_000,
  multiplier: 2,
  factor: 0.2,
  retries: 8,
};

export interface KafkaClient {
  readonly kafka: Kafka;
  readonly options: KafkaMessageLogOptions;
  readonly sendTimeout: Duration.Duration;
  /** Topics' `max.message.bytes`. */
  readonly maxMessageBytes: number;
  /** Most bytes of records one produce request carries. */
  readonly maxRequestBytes: number;
  /** Lag of this process's members by group, topic and partition (from kafkajs batch events). */
  readonly lags: Map<string, PartitionLag>;
}

/** `host:port`, `[v6]:port`: kafkajs wants the port. */
const BROKER_ADDRESS = /^(?:\[[0-9A-Fa-f:.]+\]|[^\s:[\]]+):(\d{1,5})$/;

const configError = (message: string) =>
  Effect.fail(new KafkaMessageLogConfigError({ message, cause: undefined }));

const checkOptions = (o: KafkaMessageLogOptions) => {
  const bad = o.brokers.filter((b) => {
    const port = Number(BROKER_ADDRESS.exec(b)?.[1] ?? 0);
    return port < 1 || port > 65_535;
  });
  if (o.brokers.length === 0) return configError("no Kafka brokers given");
  if (bad.length > 0) {
    return configError(
      `invalid Kafka broker address(es), expected host:port: ${bad.map((b) => JSON.stringify(b)).join(", ")}`,
    );
  }
  if (o.clientId === "") return configError("the Kafka client id is empty");
  if (!Number.isInteger(o.partitions) || o.partitions < 1) {
    return configError("the number of partitions must be a positive integer");
  }
  if (
    !Number.isInteger(o.replicationFactor) ||
    (o.replicationFactor < 1 && o.replicationFactor !== -1)
  ) {
    return configError("the replication factor must be -1 or a positive integer");
  }
  if (!(o.retentionMs > 0) || !(o.sendTimeoutMs > 0)) {
    return configError("the retention and the send timeout must be positive");
  }
  if (o.maxRecordBytes !== undefined && !(o.maxRecordBytes > 0)) {
    return configError("the largest record size must be positive");
  }
  return Effect.void;
};

/** kafkajs' own log (warnings and errors) goes to the Effect log at debug level. */
const logCreator =
  (runtime: Runtime.Runtime<never>) =>
  () =>
  ({ namespace, level, log }: LogEntry) => {
    const { message, error } = log;
    const text = `kafka client${namespace ? ` [${namespace}]` : ""}: ${String(message)}`;
    Runtime.runSync(runtime)(
      Effect.logDebug(text).pipe(
        Effect.annotateLogs({
          kafkaLevel:
            level === logLevel.ERROR ? "error" : level === logLevel.WARN ? "warn" : "info",
          ...(error === undefined ? {} : { kafkaError: String(error) }),
        }),
      ),
    );
  };

export const makeClient = (
  options: KafkaMessageLogOptions,
): Effect.Effect<KafkaClient, KafkaMessageLogConfigError> =>
  Effect.gen(function* () {
    yield* checkOptions(options);
    const runtime = yield* Effect.runtime<never>();
    const maxRecordBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
    const maxMessageBytes = Math.max(4 * MIB, maxRecordBytes + MIB);
    const config: KafkaConfig = {
      clientId: options.clientId,
      brokers: [...options.brokers],
      connectionTimeout: 3_000,
      // Joins and fetches set their own (from the session and wait times).
      requestTimeout: Math.max(5_000, options.sendTimeoutMs),
      retry: CLIENT_RETRY,
      logLevel: logLevel.WARN,
      logCreator: logCreator(runtime),
    };
    const kafka = yield* Effect.try({
      try: () => new Kafka(config),
      catch: (e) =>
        new KafkaMessageLogConfigError({
          message: `invalid Kafka client configuration: ${(e as Error).message}`,
          cause: e,
        }),
    });
    return {
      kafka,
      options,
      sendTimeout: Duration.millis(options.sendTimeoutMs),
      maxMessageBytes,
      maxRequestBytes: Math.floor(maxMessageBytes / 2),
      lags: new Map(),
    };
  });

// ---------------------------------------------------------------------------
// Errors and bounded calls

/** An error and the errors it was caused by (kafkajs wraps as `cause` or `originalError`). */
export const causeChain = (e: unknown): ReadonlyArray<{ type?: unknown; name?: unknown }> => {
  const chain: Array<{ type?: unknown; name?: unknown }> = [];
  let current: unknown = e;
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    const link = current as {
      type?: unknown;
      name?: unknown;
      cause?: unknown;
      originalError?: unknown;
    };
    chain.push(link);
    current = link.cause ?? link.originalError;
  }
  return chain;
};

/** Every `type` (Kafka error code name) along an error's chain of causes. */
export const errorTypes = (e: unknown): ReadonlyArray<string> =>
  causeChain(e).flatMap(({ type }) => (typeof type === "string" ? [type] : []));

export const hasErrorType = (e: unknown, ...types: ReadonlyArray<string>) =>
  errorTypes(e).some((t) => types.includes(t));

export const timedOut = (what: string, after: Duration.Duration) => () =>
  new StoreUnavailable({
    cause: new Error(`Kafka ${what} did not complete within ${Duration.format(after)}`),
  });

/**
 * One operation on the cluster, bounded by `timeout`; every failure (kafkajs
 * throws its own errors, wrapped once its retries are spent) is
 * StoreUnavailable. `signal` is aborted when the call is given up (timed
 * out or interrupted): an operation of several steps stops there.
 */
export const call = <A>(
  what: string,
  op: (signal: AbortSignal) => Promise<A>,
  timeout: Duration.Duration,
  retryAfter?: (error: unknown) => number | undefined,
): Effect.Effect<A, StoreUnavailable> =>
  boundedCall({
    op,
    timeout,
    onTimeout: timedOut(what, timeout),
    onError: (cause) => Effect.fail(new StoreUnavailable({ cause })),
    ...(retryAfter === undefined ? {} : { retryAfter }),
  });

/**
 * For `call`'s `retryAfter`: a partition whose leader is still being
 * elected (just after its topic was created, or while leadership moves)
 * answers with these errors, which kafkajs passes on for some requests
 * (listing offsets) instead of retrying them.
 */
export const whileLeaderMoves = (error: unknown): number | undefined =>
  hasErrorType(error, "NOT_LEADER_FOR_PARTITION", "LEADER_NOT_AVAILABLE") ? 100 : undefined;

/**
 * `connect` shared by concurrent callers: one attempt at a time (a
 * producer's first connect also gets its producer id, which must happen once).
 */
export const sharedConnect = (connect: () => Promise<void>) => {
  let pending: Promise<void> | undefined;
  return (): Promise<void> => {
    pending ??= connect().finally(() => {
      pending = undefined;
    });
    return pending;
  };
};

/** Closing a kafkajs client: bounded, failures only logged. */
export const closeQuietly = (what: string, close: () => Promise<void>) =>
  Effect.tryPromise(close).pipe(
    Effect.timeout(CLOSE_TIMEOUT),
    Effect.catchAllCause((cause) => Effect.logWarning(`closing the Kafka ${what} failed`, cause)),
  );

/**
 * Closes a consumer, leaving its group. kafkajs' `disconnect` does not stop
 * a consumer still joining (its join retries on, reconnecting, and the
 * member stays in the group), so a join in progress (`running`, the
 * consumer's latest `run`) is given `CLOSE_TIMEOUT` to complete first; and
 * should it complete only later, the consumer is disconnected once more then.
 */
export const closeConsumer = (consumer: Consumer, running: () => Promise<unknown>) =>
  Effect.tryPromise(running).pipe(
    Effect.timeout(CLOSE_TIMEOUT),
    Effect.ignore,
    Effect.zipRight(closeQuietly("consumer", () => consumer.disconnect())),
    Effect.zipRight(
      Effect.sync(() => {
        running()
          .then(() => consumer.disconnect())
          .catch(() => undefined);
      }),
    ),
  );
