/** The MemoryManager port on a given storage layer, as the conformance suites build it. */
import { type Duration, Layer } from "effect";
import { defaultConfig, MeshConfig } from "../../src/config.js";
import { memoryManagerOn } from "../../src/memory/service.js";
import type { MemoryStore } from "../../src/memory/store.js";
import { HealthRegistry } from "../../src/server/health.js";

export const memoryManagerLayer = <E>(
  storage: Layer.Layer<MemoryStore, E>,
  overrides: {
    maxDataBytes?: number;
    defaultTtl?: Duration.Duration;
    defaultMaxIdle?: Duration.Duration;
  } = {},
) => {
  const defaults = defaultConfig();
  const config = { ...defaults, memory: { ...defaults.memory, ...overrides } };
  return memoryManagerOn(storage).pipe(
    Layer.provideMerge(HealthRegistry.Default),
    Layer.provide(Layer.succeed(MeshConfig, config)),
  );
};
