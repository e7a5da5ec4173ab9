/** The DataStore port on a given storage layer, as the conformance suites build it. */
import { Duration, Layer } from "effect";
import { defaultConfig, MeshConfig } from "../../src/config.js";
import { dataStoreOn } from "../../src/datastore/service.js";
import type { DocStore } from "../../src/datastore/store.js";
import { HealthRegistry } from "../../src/server/health.js";

export const dataStoreLayer = <E>(
  storage: Layer.Layer<DocStore, E>,
  maxDocumentBytes = 1024 * 1024,
) => {
  const defaults = defaultConfig();
  const config = {
    ...defaults,
    datastore: { ...defaults.datastore, maxDocumentBytes, watchPollInterval: Duration.millis(50) },
  };
  return dataStoreOn(storage).pipe(
    Layer.provideMerge(HealthRegistry.Default),
    Layer.provide(Layer.succeed(MeshConfig, config)),
  );
};
