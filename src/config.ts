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
  /**
   * TCP port of the native gRPC server (grpc-js, the fast path for gRPC
   * clients); undefined: not served (`FO_GRPC_PORT=off`). Unset, it is
   * `FO_PORT` + 1000 (8080 → 9080), so nodes on neighbouring ports do not
   * collide; a free port when `FO_PORT` is 0 or that would pass 65535.
   */
  readonly grpcPort: number | undefined;
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
  /** Whether `GET /` serves the web console (health, services, memory, messages). */
  readonly console: boolean;
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
  /** MessageBus backend: Kafka when brokers are set, else the embedded log. */
  readonly messaging: {
    readonly kafkaBrokers: ReadonlyArray<string>;
    /** Kafka client id, also the prefix of the mesh's own consumer groups. */
    readonly kafkaClientId: string;
    /** Prefix of every topic the bus creates. */
    readonly topicPrefix: string;
    /** Partitions of a topic the bus creates. */
    readonly partitions: number;
    /** Replication factor of a topic the bus creates; -1 takes the broker's default. */
    readonly replicationFactor: number;
    /** How long topics keep messages. */
    readonly retention: Duration.Duration;
    /** Longest a send waits for the broker before failing with UNAVAILABLE. */
    readonly sendTimeout: Duration.Duration;
    /**
     * `FO_PUBLISH_LINGER_MS` (default 5, 0 to 1000): how long a published
     * message may wait for concurrent publishes to share its append (one
     * Kafka produce request). While an append of the mesh is in progress, new
     * messages gather until it is answered or this long has passed, then go
     * together; an idle mesh sends at once, so this only bounds the wait
     * under load. 0: every call is sent at once on its own.
     */
    readonly publishLingerMs: number;
    /** Largest message payload, in bytes. */
    readonly maxPayloadBytes: number;
    /** Open subscriptions one client (connection) may have at once. */
    readonly maxSubscriptionsPerClient: number;
  };
  /**
   * OpenTelemetry, from the standard variables. OTLP export (traces, metrics,
   * logs, over HTTP/protobuf to `{endpoint}/v1/{signal}`) is on when
   * `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the exporters read the other
   * `OTEL_EXPORTER_OTLP_*` variables (headers, timeouts) themselves, the
   * tracer `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.
   */
  readonly telemetry: {
    readonly serviceName: string;
    readonly otlpEndpoint: Option.Option<string>;
    /** How often metrics are exported over OTLP (`OTEL_METRIC_EXPORT_INTERVAL`, ms). */
    readonly metricExportInterval: Duration.Duration;
  };
  /** Who may call, over what, and how much. */
  readonly security: {
    /** JSON file of hashed bearer tokens with their principals and allowed methods. */
    readonly authTokensFile: Option.Option<string>;
    /** This node's own token for the calls it makes itself (registration, registry watch). */
    readonly meshToken: Option.Option<Redacted.Redacted<string>>;
    /** PEM certificate and key: serve TLS (h2 and http/1.1 by ALPN) instead of cleartext. */
    readonly tlsCert: Option.Option<string>;
    readonly tlsKey: Option.Option<string>;
    /** PEM CA: require client certificates signed by it (mTLS); the principal is their subject CN. */
    readonly tlsClientCa: Option.Option<string>;
    /**
     * Principals of the mesh nodes that may pass on their caller's identity
     * (`fo-forwarded-principal`) when they forward a call here.
     */
    readonly trustedForwarders: ReadonlyArray<string>;
    /** Requests per second per client (principal, or connection without auth); 0: no limit. */
    readonly rateLimit: number;
    /** Server streams one client may have open at once. */
    readonly maxStreamsPerClient: number;
  };
  /** This process as one node of a mesh of several (split deployment, discovery). */
  readonly mesh: {
    /** Services hosted here; calls for the others are forwarded to nodes that host them. */
    readonly services: ReadonlyArray<HostedService>;
    /** Node URLs to reach the mesh through (the registry, and services no node is known for yet). */
    readonly seeds: ReadonlyArray<string>;
    /** Register in the service registry: on by default when part of a mesh (seeds, or not all services). */
    readonly register: Option.Option<boolean>;
    /** Id of this node in the registry; `<hostname>-<port>` when unset. */
    readonly nodeId: Option.Option<string>;
    /** URL other nodes reach this one at; the listening address when unset. */
    readonly advertiseUrl: Option.Option<string>;
    /** Lease of the registration; renewed every third of it. */
    readonly lease: Duration.Duration;
  };
}

export const hostedServices = ["datastore", "memory", "messaging", "telemetry"] as const;
export type HostedService = (typeof hostedServices)[number];

const port = Config.integer("FO_PORT").pipe(
  Config.validate({
    message: "must be a port number 0-65535",
    validation: (p) => p >= 0 && p <= 65535,
  }),
  Config.withDefault(8080),
);

const GRPC_PORT_OFFSET = 1000;

const grpcPort = Config.all([port, Config.option(Config.string("FO_GRPC_PORT"))]).pipe(
  Config.mapOrFail(([main, setting]) => {
    if (setting._tag === "None")
      return Either.right(
        main === 0 || main + GRPC_PORT_OFFSET > 65535 ? 0 : main + GRPC_PORT_OFFSET,
      );
    if (setting.value.toLowerCase() === "off") return Either.right(undefined);
    const n = Number(setting.value);
    return Number.isInteger(n) && n >= 0 && n <= 65535 && setting.value.trim() !== ""
      ? Either.right(n)
      : Either.left(
          ConfigError.InvalidData(["FO_GRPC_PORT"], "must be a port number 0-65535 or `off`"),
        );
  }),
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

/** A comma-separated list; blanks dropped. */
const list = (name: string, fallback: string) =>
  Config.string(name).pipe(
    Config.withDefault(fallback),
    Config.map((s) =>
      s
        .split(",")
        .map((o) => o.trim())
        .filter((o) => o.length > 0),
    ),
  );

const positive = (name: string, fallback: number, unit = "number") =>
  Config.integer(name).pipe(
    Config.validate({ message: `must be a positive ${unit}`, validation: (n) => n > 0 }),
    Config.withDefault(fallback),
  );

const corsOrigins = list("FO_CORS_ORIGINS", "*");

const services = list("FO_SERVICES", hostedServices.join(",")).pipe(
  Config.mapOrFail((names) => {
    const unknown = names.filter((n) => !(hostedServices as ReadonlyArray<string>).includes(n));
    if (unknown.length > 0 || names.length === 0)
      return Either.left(
        ConfigError.InvalidData(
          [],
          `must name one or more of ${hostedServices.join(", ")}${unknown.length > 0 ? ` (not ${unknown.join(", ")})` : ""}`,
        ),
      );
    return Either.right([...new Set(names)] as HostedService[]);
  }),
);

const maxRequestBytes = positive("FO_MAX_REQUEST_BYTES", 4 * 1024 * 1024, "number of bytes");

/** The mesh configuration, as an Effect `Config` (so tests can supply their own provider). */
export const meshConfig: Config.Config<MeshConfigShape> = Config.all({
  port,
  grpcPort,
  host: Config.string("FO_HOST").pipe(Config.withDefault("127.0.0.1")),
  maxRequestBytes,
  corsOrigins,
  drainTimeout: Config.duration("FO_DRAIN_TIMEOUT").pipe(Config.withDefault(Duration.seconds(10))),
  logLevel,
  console: Config.boolean("FO_CONSOLE").pipe(Config.withDefault(true)),
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
    maxDocumentBytes: positive("FO_MAX_DOCUMENT_BYTES", 1024 * 1024, "number of bytes"),
    watchPollInterval: Config.duration("FO_WATCH_POLL_INTERVAL").pipe(
      Config.withDefault(Duration.millis(250)),
    ),
  }),
  memory: Config.all({
    hazelcastMembers: list("FO_HAZELCAST_MEMBERS", ""),
    hazelcastCluster: Config.string("FO_HAZELCAST_CLUSTER").pipe(Config.withDefault("dev")),
    defaultTtl: Config.duration("FO_MEMORY_DEFAULT_TTL").pipe(
      Config.withDefault(Duration.seconds(300)),
    ),
    defaultMaxIdle: Config.duration("FO_MEMORY_DEFAULT_MAX_IDLE").pipe(
      Config.withDefault(Duration.seconds(60)),
    ),
    maxDataBytes: positive("FO_MEMORY_MAX_DATA_BYTES", 16 * 1024 * 1024, "number of bytes"),
  }),
  messaging: Config.all({
    kafkaBrokers: list("FO_KAFKA_BROKERS", ""),
    kafkaClientId: Config.string("FO_KAFKA_CLIENT_ID").pipe(
      Config.withDefault("floworchestrator-mesh"),
    ),
    topicPrefix: Config.string("FO_BUS_TOPIC_PREFIX").pipe(
      Config.validate({
        message: "must be letters, digits, '.', '_' or '-' (at most 40)",
        validation: (s) => /^[A-Za-z0-9._-]{0,40}$/.test(s),
      }),
      Config.withDefault("fo."),
    ),
    partitions: positive("FO_BUS_PARTITIONS", 3),
    replicationFactor: Config.integer("FO_BUS_REPLICATION_FACTOR").pipe(
      Config.validate({
        message: "must be -1 (broker default) or a positive number",
        validation: (n) => n === -1 || n > 0,
      }),
      Config.withDefault(-1),
    ),
    retention: Config.duration("FO_BUS_RETENTION").pipe(Config.withDefault(Duration.days(7))),
    sendTimeout: Config.duration("FO_BUS_SEND_TIMEOUT").pipe(
      Config.withDefault(Duration.seconds(10)),
    ),
    publishLingerMs: Config.integer("FO_PUBLISH_LINGER_MS").pipe(
      Config.validate({
        message: "must be a number of milliseconds from 0 (off) to 1000",
        validation: (n) => n >= 0 && n <= 1000,
      }),
      Config.withDefault(5),
    ),
    maxPayloadBytes: positive("FO_BUS_MAX_PAYLOAD_BYTES", 1024 * 1024, "number of bytes"),
    maxSubscriptionsPerClient: positive("FO_BUS_MAX_SUBSCRIPTIONS_PER_CLIENT", 32),
  }),
  telemetry: Config.all({
    serviceName: Config.string("OTEL_SERVICE_NAME").pipe(
      Config.withDefault("floworchestrator-mesh"),
    ),
    otlpEndpoint: Config.option(
      Config.string("OTEL_EXPORTER_OTLP_ENDPOINT").pipe(
        Config.map((url) => url.replace(/\/+$/, "")),
      ),
    ),
    metricExportInterval: positive(
      "OTEL_METRIC_EXPORT_INTERVAL",
      60_000,
      "number of milliseconds",
    ).pipe(Config.map(Duration.millis)),
  }),
  security: Config.all({
    authTokensFile: Config.option(Config.string("FO_AUTH_TOKENS_FILE")),
    meshToken: Config.option(Config.redacted("FO_MESH_TOKEN")),
    tlsCert: Config.option(Config.string("FO_TLS_CERT")),
    tlsKey: Config.option(Config.string("FO_TLS_KEY")),
    tlsClientCa: Config.option(Config.string("FO_TLS_CLIENT_CA")),
    trustedForwarders: list("FO_TRUSTED_FORWARDERS", ""),
    rateLimit: Config.integer("FO_RATE_LIMIT").pipe(
      Config.validate({
        message: "must be 0 (off) or a positive number",
        validation: (n) => n >= 0,
      }),
      Config.withDefault(0),
    ),
    maxStreamsPerClient: positive("FO_MAX_STREAMS_PER_CLIENT", 256),
  }).pipe(
    Config.validate({
      message: "FO_TLS_CERT and FO_TLS_KEY go together, and FO_TLS_CLIENT_CA needs them",
      validation: (s) =>
        s.tlsCert._tag === s.tlsKey._tag &&
        (s.tlsClientCa._tag === "None" || s.tlsCert._tag === "Some"),
    }),
  ),
  mesh: Config.all({
    services,
    seeds: list("FO_MESH_SEEDS", "").pipe(
      Config.map((urls) => urls.map((u) => u.replace(/\/+$/, ""))),
    ),
    register: Config.option(Config.boolean("FO_MESH_REGISTER")),
    nodeId: Config.option(Config.string("FO_NODE_ID")),
    advertiseUrl: Config.option(
      Config.string("FO_ADVERTISE_URL").pipe(Config.map((u) => u.replace(/\/+$/, ""))),
    ),
    lease: Config.duration("FO_MESH_LEASE").pipe(
      Config.validate({
        message: "must be between 1 second and 1 hour",
        validation: (d) => Duration.between(d, { minimum: "1 second", maximum: "1 hour" }),
      }),
      Config.withDefault(Duration.seconds(10)),
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
