/**
 * The MemoryManager port implemented once over the storage contract, the
 * choice of backend (Hazelcast when FO_HAZELCAST_MEMBERS is set, else the
 * embedded store), and the service's health, which follows the backend's.
 */
import { Duration, Effect, Layer } from "effect";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { MeshConfig } from "../config.js";
import { healthFromPing } from "../server/health.js";
import { traceBackend } from "../telemetry/spans.js";
import { branchAcceptsWrites, makeBranches } from "./branches.js";
import { EmbeddedMemoryStore } from "./embedded.js";
import { makeLocks } from "./locks.js";
import { MemoryManager } from "./MemoryManager.js";
import { makeMemory } from "./memory.js";
import { MemoryStore } from "./store.js";
import { makeWatch } from "./watch.js";

const MemoryManagerImpl = Layer.effect(
  MemoryManager,
  Effect.gen(function* () {
    const backend = yield* MemoryStore;
    const store = traceBackend(backend, "memory", { "fo.backend": backend.backend });
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
  Layer.mergeAll(MemoryManagerImpl, MemoryHealth).pipe(Layer.provideMerge(storage));

export const MemoryManagerLive = memoryManagerOn(MemoryStoreLive);
