/**
 * The DataStore port implemented once over the storage contract, plus the
 * choice of backend (MongoDB when FO_MONGODB_URI is set, else the embedded
 * store), the health of the service, which follows the backend's, and the
 * backend's gauges (MongoDB's connection pool) when Telemetry is there.
 */
import { join } from "node:path";
import type { ObservableResult } from "@opentelemetry/api";
import { Effect, Layer, Option, Redacted, Stream } from "effect";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { MeshConfig } from "../config.js";
import { healthFromPing } from "../server/health.js";
import { Telemetry } from "../telemetry/pipeline.js";
import { traceBackend } from "../telemetry/spans.js";
import { ChangeFeed, ChangeFeedLive } from "./changes.js";
import { DataStore } from "./DataStore.js";
import { EmbeddedStore } from "./embedded.js";
import { makeEntities } from "./entities.js";
import { MongoPoolStats, MongoStore } from "./mongodb.js";
import { makeParameterDefinitions } from "./parameter-definitions.js";
import { makeParameters } from "./parameters.js";
import { makeRegistry } from "./registry.js";
import { DocStore } from "./store.js";
import { makeVersions } from "./versions.js";

const DataStoreImpl = Layer.effect(
  DataStore,
  Effect.gen(function* () {
    const backend = yield* DocStore;
    const store = yield* traceBackend(backend, "datastore", { "fo.backend": backend.backend });
    const feed = yield* ChangeFeed;
    const config = yield* MeshConfig;
    const publish = (topic: "service" | "parameter") => ({
      publish: (op: string, doc: Parameters<typeof feed.publish>[2]) =>
        feed.publish(topic, op, doc),
    });
    const parameters = makeParameters(
      store.collection("parameters"),
      store.collection("parameter_history"),
      store.collection("parameter_definitions"),
      publish("parameter"),
    );
    const registry = makeRegistry(store.collection("services"), publish("service"));
    return {
      ...makeEntities(store.collection("entities"), {
        maxDocumentBytes: config.datastore.maxDocumentBytes,
      }),
      ...makeVersions(store.collection("versions")),
      ...makeParameterDefinitions(store.collection("parameter_definitions")),
      ...parameters,
      ...registry,
      watchParameters: (req) =>
        parameters.watchParameters(req).pipe(Stream.provideService(ChangeFeed, feed)),
      watchServices: (req) =>
        registry.watchServices(req).pipe(
          Stream.map((event) => ({ event })),
          Stream.provideService(ChangeFeed, feed),
        ),
    };
  }),
);

const DataStoreHealth = healthFromPing(
  DataStoreService.typeName,
  Effect.flatMap(DocStore, (store) => store.ping),
);

/**
 * `datastore.pool.connections` {state: in_use | idle}: the MongoDB client's
 * connections (over every server's pool), so a pool running full (calls
 * then wait, and fail after the driver's wait-queue timeout) shows before
 * calls fail. Only with Telemetry and a backend that has a pool (the
 * embedded store has none); the callback goes with the layer.
 */
const DataStoreGauges = Layer.scopedDiscard(
  Effect.gen(function* () {
    const telemetry = yield* Effect.serviceOption(Telemetry);
    const pools = yield* Effect.serviceOption(MongoPoolStats);
    if (Option.isNone(telemetry) || Option.isNone(pools)) return;
    const connections = telemetry.value.meter.createObservableGauge("datastore.pool.connections", {
      description: "Connections of the MongoDB client's pools, by state (in_use, idle)",
    });
    const { snapshot } = pools.value;
    const observe = (result: ObservableResult) => {
      const now = snapshot();
      result.observe(now.inUse, { state: "in_use" });
      result.observe(now.idle, { state: "idle" });
    };
    yield* Effect.acquireRelease(
      Effect.sync(() => connections.addCallback(observe)),
      () => Effect.sync(() => connections.removeCallback(observe)),
    );
  }),
);

/** Secondary indexes for the queries the DataStore makes (identity is always `_id`). */
const mongoIndexes = [
  { collection: "entities", keys: { kind: 1, _id: 1 } },
  { collection: "entities", keys: { labelPairs: 1 } },
  { collection: "services", keys: { order: 1 } },
  { collection: "services", keys: { serviceType: 1, order: 1 } },
  { collection: "parameters", keys: { order: 1 } },
  { collection: "parameters", keys: { scopeKey: 1, key: 1 } },
  { collection: "parameter_history", keys: { paramId: 1, revision: -1 } },
  { collection: "parameter_definitions", keys: { key: 1 } },
  { collection: "versions", keys: { entityType: 1, entityId: 1, precedence: 1 } },
  { collection: "changes", keys: { seq: 1 } },
  { collection: "changes", keys: { at: 1 } },
] as const;

/** The storage backend chosen by configuration. */
export const DocStoreLive = Layer.unwrapEffect(
  Effect.map(MeshConfig, ({ datastore }) =>
    Option.match<Redacted.Redacted<string>, Layer.Layer<DocStore, unknown>>(datastore.mongodbUri, {
      onNone: () => EmbeddedStore.layer({ dir: join(datastore.dataDir, "datastore") }),
      onSome: (uri) =>
        MongoStore.layer({
          uri: Redacted.value(uri),
          database: datastore.mongodbDatabase,
          indexes: mongoIndexes,
        }),
    }),
  ),
);

/** DataStore on a given storage layer (tests pass their own). */
export const dataStoreOn = <E, R>(storage: Layer.Layer<DocStore, E, R>) => {
  const feed = Layer.unwrapEffect(
    Effect.map(MeshConfig, (c) => ChangeFeedLive(c.datastore.watchPollInterval)),
  );
  return Layer.mergeAll(DataStoreImpl, DataStoreHealth, DataStoreGauges).pipe(
    Layer.provide(feed),
    Layer.provideMerge(storage),
  );
};

export const DataStoreLive = dataStoreOn(DocStoreLive);
