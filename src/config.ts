/**
 * Every setting of the mesh, read once through Effect `Config` from `FO_*`
 * environment variables. Nothing else in the code reads `process.env`.
 */
import {
  Config,
  ConfigError,
  ConfigProvider,
  Context,
  Duration,
  Effect,
  Either,
  LogLevel,
  type Option,
  type Redacted,
} from "effect";

export interface MeshConfigShape {
  /** TCP port of the one server (gRPC, gRPC-Web and Connect). 0 picks a free port. */
  readonly port: number;
  /** Address to bind; loopback by default so nothing is exposed by accident. */
  readonly host: string;
  /** Largest accepted request message, in bytes; larger ones get RESOURCE_EXHAUSTED. */
  readonly maxRequestBytes: number;
  /** Origins allowed to call from a browser; `*` allows any. Empty disables CORS. */
  readonly corsOrigins: ReadonlyArray<string>;
  /** How long a graceful shutdown waits for in-flight calls before cutting them. */
  readonly drainTimeout: Duration.Duration;
  /** Minimum level of log lines written to stdout. */
  readonly logLevel: LogLevel.LogLevel;
  /** DataStore backend: MongoDB when a URI is set, else the embedded store. */
  readonly datastore: {
    readonly mongodbUri: Option.Option<Redacted.Redacted<string>>;
    readonly mongodbDatabase: string;
    /** Where the embedded backends persist. */
    readonly dataDir: string;
    /** Largest entity document, in bytes (JSON encoded). */
    readonly maxDocumentBytes: number;
    /** How often watch streams look for changes made by any mesh instance. */
    readonly watchPollInterval: Duration.Duration;
  };
  /** MemoryManager backend: Hazelcast when members are set, else the embedded store. */
  readonly memory: {
    readonly hazelcastMembers: ReadonlyArray<string>;
    readonly hazelcastCluster: string;
    /** Lifetime of an allocation that names none. */
    readonly defaultTtl: Duration.Duration;
    /** Idle time after which an allocation that names none is removed. */
    readonly defaultMaxIdle: Duration.Duration;
    /** Default and largest size limit of one address's data. */
    readonly maxDataBytes: number;
  };
}

const port = Config.integer("FO_PORT").pipe(
  Config.validate({
    message: "must be a port number 0-65535",
    validation: (p) => p >= 0 && p <= 65535,
  }),
  Config.withDefault(8080),
);

const maxRequestBytes = Config.integer("FO_MAX_REQUEST_BYTES").pipe(
  Config.validate({ message: "must be a positive number of bytes", validation: (n) => n > 0 }),
  Config.withDefault(4 * 1024 * 1024),
);

/** `debug`, `INFO`, `Warning`…: any case, as operators type it. */
const logLevel = Config.string("FO_LOG_LEVEL").pipe(
  Config.mapOrFail((s) => {
    const level = LogLevel.allLevels.find(
      (l) => l.label.toLowerCase() === s.toLowerCase() || l._tag.toLowerCase() === s.toLowerCase(),
    );
    return level
      ? Either.right(level)
      : Either.left(
          ConfigError.InvalidData(
            [],
            `must be one of ${LogLevel.allLevels.map((l) => l.label.toLowerCase()).join(", ")}`,
          ),
        );
  }),
  Config.withDefault(LogLevel.Info),
);

const corsOrigins = Config.string("FO_CORS_ORIGINS").pipe(
  Config.withDefault("*"),
  Config.map((s) =>
    s
      .split(",")
      .map((o) => o.trim())
      .filter((o) => o.length > 0),
  ),
);

/** The mesh configuration, as an Effect `Config` (so tests can supply their own provider). */
export const meshConfig: Config.Config<MeshConfigShape> = Config.all({
  port,
  host: Config.string("FO_HOST").pipe(Config.withDefault("127.0.0.1")),
  maxRequestBytes,
  corsOrigins,
  drainTimeout: Config.duration("FO_DRAIN_TIMEOUT").pipe(Config.withDefault(Duration.seconds(10))),
  logLevel,
  datastore: Config.all({
    mongodbUri: Config.option(Config.redacted("FO_MONGODB_URI")),
    mongodbDatabase: Config.string("FO_MONGODB_DATABASE").pipe(
      Config.validate({
        message: "must be a MongoDB database name (letters, digits, '_', '-'; at most 63)",
        validation: (s) => /^[A-Za-z0-9_-]{1,63}$/.test(s),
      }),
      Config.withDefault("floworchestrator"),
    ),
    dataDir: Config.string("FO_DATA_DIR").pipe(Config.withDefault("./data")),
    maxDocumentBytes: Config.integer("FO_MAX_DOCUMENT_BYTES").pipe(
      Config.validate({ message: "must be a positive number of bytes", validation: (n) => n > 0 }),
      Config.withDefault(1024 * 1024),
    ),
    watchPollInterval: Config.duration("FO_WATCH_POLL_INTERVAL").pipe(
      Config.withDefault(Duration.millis(250)),
    ),
  }),
  memory: Config.all({
    hazelcastMembers: Config.string("FO_HAZELCAST_MEMBERS").pipe(
      Config.withDefault(""),
      Config.map((s) =>
        s
          .split(",")
          .map((m) => m.trim())
          .filter((m) => m.length > 0),
      ),
    ),
    hazelcastCluster: Config.string("FO_HAZELCAST_CLUSTER").pipe(Config.withDefault("dev")),
    defaultTtl: Config.duration("FO_MEMORY_DEFAULT_TTL").pipe(
      Config.withDefault(Duration.seconds(300)),
    ),
    defaultMaxIdle: Config.duration("FO_MEMORY_DEFAULT_MAX_IDLE").pipe(
      Config.withDefault(Duration.seconds(60)),
    ),
    maxDataBytes: Config.integer("FO_MEMORY_MAX_DATA_BYTES").pipe(
      Config.validate({ message: "must be a positive number of bytes", validation: (n) => n > 0 }),
      Config.withDefault(16 * 1024 * 1024),
    ),
  }),
});

export class MeshConfig extends Context.Tag("fo/MeshConfig")<MeshConfig, MeshConfigShape>() {}

/** Every setting at its default, ignoring the environment. */
export const defaultConfig = (): MeshConfigShape =>
  Effect.runSync(Effect.withConfigProvider(meshConfig, ConfigProvider.fromMap(new Map())));

/**
 * One line for a person: which variable is wrong and why. Effect's ConfigError
 * is a tree (And/Or/Missing/InvalidData); we flatten it to its leaves.
 */
export const formatConfigError = (error: ConfigError.ConfigError): string => {
  const leaves: string[] = [];
  const walk = (e: ConfigError.ConfigError): void => {
    switch (e._op) {
      case "And":
      case "Or":
        walk(e.left);
        walk(e.right);
        return;
      case "InvalidData":
      case "MissingData":
      case "SourceUnavailable":
      case "Unsupported":
        leaves.push(`${e.path.join("_")}: ${e.message}`);
        return;
    }
  };
  walk(error);
  return `invalid configuration: ${leaves.join("; ")}`;
};

/** Reads the configuration and reports a bad value as a one-line string. */
export const loadConfig = (provider?: ConfigProvider.ConfigProvider) =>
  Effect.either(provider ? Effect.withConfigProvider(meshConfig, provider) : meshConfig).pipe(
    Effect.map(Either.mapLeft(formatConfigError)),
  );
