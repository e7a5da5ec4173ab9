/**
 * The application as one Layer: the server and everything it stands on.
 * Service issues add their ports' layers here. The output keeps the health
 * registry so embedders (tests, main) can report into it.
 */
import { Layer } from "effect";
import { MeshConfig, type MeshConfigShape } from "./config.js";
import { DataStoreLive } from "./datastore/service.js";
import { MemoryManagerLive } from "./memory/service.js";
import { MessageBusLive } from "./messaging/service.js";
import { HealthRegistry } from "./server/health.js";
import { MeshServerLive } from "./server/server.js";
import { otelLogs } from "./telemetry/logs.js";
import { type TelemetryOptions, telemetryLayer } from "./telemetry/pipeline.js";
import { TelemetryServiceLive } from "./telemetry/service.js";
import { effectSpans } from "./telemetry/spans.js";

export const appLayer = (config: MeshConfigShape, telemetry: TelemetryOptions = {}) =>
  MeshServerLive.pipe(
    Layer.provide(
      Layer.mergeAll(DataStoreLive, MemoryManagerLive, MessageBusLive, TelemetryServiceLive),
    ),
    Layer.provide(Layer.merge(otelLogs, effectSpans)),
    Layer.provideMerge(telemetryLayer(telemetry)),
    Layer.provideMerge(HealthRegistry.Default),
    Layer.provide(Layer.succeed(MeshConfig, config)),
  );
