/** The MessageBus port on a given log layer, as the conformance suites build it. */
import { Layer } from "effect";
import { defaultConfig, MeshConfig, type MeshConfigShape } from "../../src/config.js";
import type { MessageLog } from "../../src/messaging/log.js";
import { messageBusOn } from "../../src/messaging/service.js";
import { HealthRegistry } from "../../src/server/health.js";

export const messageBusLayer = <E>(
  log: Layer.Layer<MessageLog, E>,
  overrides: Partial<MeshConfigShape["messaging"]> = {},
) => {
  const defaults = defaultConfig();
  const config = { ...defaults, messaging: { ...defaults.messaging, ...overrides } };
  return messageBusOn(log).pipe(
    Layer.provideMerge(HealthRegistry.Default),
    Layer.provide(Layer.succeed(MeshConfig, config)),
  );
};
