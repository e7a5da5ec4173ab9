/**
 * The MemoryManager port implemented once over the storage contract, the
 * choice of backend (Hazelcast when FO_HAZELCAST_MEMBERS is set, else the
 * embedded store), the service's health, which follows the backend's, and
 * the backend's gauges (Hazelcast's map sizes) when Telemetry is there.
 */
import type { ObservableResult } from "@opentelemetry/api";
import { Duration, Effect, Layer, Option, Runtime } from "effect";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { MeshConfig } from "../config.js";
import { healthFromPing } from "../server/health.js";
import { Telemetry } from "../telemetry/pipeline.js";
import { traceBackend } from "../telemetry/spans.js";
import { branchAcceptsWrites, makeBranches } from "./branches.js";
import { EmbeddedMemoryStore } from "./embedded.js";
// Only the tag and its poller: nothing of the Hazelcast client loads with it.
import { MemoryMapSizes } from "./hazelcast/map-sizes.js";
import { makeLocks } from "./locks.js";
import { MemoryManager } from "./MemoryManager.js";
import { makeMemory } from "./memory.js";
import { MemoryStore } from "./store.js";
import { makeWatch } from "./watch.js";

const MemoryManagerImpl = Layer.effect(
  MemoryManager,
  Effect.gen(function* () {
    const backend = yield* MemoryStore;
    const store = yield* traceBackend(backend, "memory", { "fo.backend": backend.backend });
    const { memory: config } = yield* MeshConfig;
    const memory = makeMemory(
      store,
      {
        defaultTtlMs: Duration.toMillis(config.defaultTtl),
        defaultMaxIdleMs: Duration.toMillis(config.defaultMaxIdle),
        maxDataBytes: config.maxDataBytes,
      },
      branchAcceptsWrites(store),
    );
    const { internal: _, ...rpcs } = memory;
    return {
      ...rpcs,
      ...makeBranches(store, memory),
      ...makeLocks(store),
      ...makeWatch(store),
    };
  }),
);

const MemoryHealth = healthFromPing(
  MemoryManagerService.typeName,
  Effect.flatMap(MemoryStore, (store) => store.ping),
);

/**
 * `memory.map.entries` {map: meta | data | branches | locks}: entries per
 * map of the Hazelcast store (memory records, their bytes, branch records,
 * leased locks), polled on collection and never waited for long (see
 * hazelcast/map-sizes.ts). Only with Telemetry and a backend that reports
 * sizes (the embedded store does not); the callback goes with the layer.
 */
const MemoryGauges = Layer.scopedDiscard(
  Effect.gen(function* () {
    const telemetry = yield* Effect.serviceOption(Telemetry);
    const sizes = yield* Effect.serviceOption(MemoryMapSizes);
    if (Option.isNone(telemetry) || Option.isNone(sizes)) return;
    const entries = telemetry.value.meter.createObservableGauge("memory.map.entries", {
      description: "Entries per map of the Hazelcast memory store",
    });
    const runPromise = Runtime.runPromise(yield* Effect.runtime<never>());
    const { current } = sizes.value;
    const observe = async (result: ObservableResult) => {
      for (const { map, entries: n } of await runPromise(current)) result.observe(n, { map });
    };
    yield* Effect.acquireRelease(
      Effect.sync(() => entries.addCallback(observe)),
      () => Effect.sync(() => entries.removeCallback(observe)),
    );
  }),
);

/**
 * The storage backend chosen by configuration. The Hazelcast client is only
 * loaded when a cluster is configured: it is large, and embedded runs never
 * need it.
 */
export const MemoryStoreLive = Layer.unwrapEffect(
  Effect.flatMap(
    MeshConfig,
    ({ memory }): Effect.Effect<Layer.Layer<MemoryStore, unknown>> =>
      memory.hazelcastMembers.length === 0
        ? Effect.succeed(EmbeddedMemoryStore.layer())
        : Effect.promise(() => import("./hazelcast.js")).pipe(
            Effect.map(({ HazelcastMemoryStore }) =>
              HazelcastMemoryStore.layer({
                members: memory.hazelcastMembers,
                clusterName: memory.hazelcastCluster,
              }),
            ),
          ),
  ),
);

/** MemoryManager on a given storage layer (tests pass their own). */
export const memoryManagerOn = <E, R>(storage: Layer.Layer<MemoryStore, E, R>) =>
  Layer.mergeAll(MemoryManagerImpl, MemoryHealth, MemoryGauges).pipe(Layer.provideMerge(storage));

export const MemoryManagerLive = memoryManagerOn(MemoryStoreLive);
