/** Starts a real mesh server on a free port for a test, on embedded backends. */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect, Layer, Logger, LogLevel, ManagedRuntime } from "effect";
import { appLayer } from "../../src/app.js";
import { defaultConfig, type MeshConfigShape } from "../../src/config.js";
import { HealthRegistry } from "../../src/server/health.js";
import { MeshServer } from "../../src/server/server.js";
import { jsonLogs } from "../../src/telemetry/logs.js";
import type { TelemetryOptions } from "../../src/telemetry/pipeline.js";
import { nativeGrpcUrls } from "./clients.js";

export interface TestMesh {
  readonly url: string;
  readonly port: number;
  /** The native gRPC server (grpc-js), unless the overrides turned it off. */
  readonly grpcUrl: string | undefined;
  readonly health: HealthRegistry;
  /** Graceful shutdown, as on SIGTERM. */
  readonly close: () => Promise<void>;
}

export const startMesh = async (
  overrides: Partial<MeshConfigShape> = {},
  telemetry: TelemetryOptions = {},
): Promise<TestMesh> => {
  const defaults = defaultConfig();
  // Embedded backends persist: each mesh gets its own fresh data directory.
  const dataDir = await mkdtemp(join(tmpdir(), "fo-mesh-"));
  const config = {
    ...defaults,
    port: 0,
    grpcPort: 0,
    datastore: { ...defaults.datastore, dataDir },
    ...overrides,
  };
  const runtime = ManagedRuntime.make(
    appLayer(config, telemetry).pipe(
      Layer.provide(jsonLogs),
      Layer.provide(Logger.minimumLogLevel(LogLevel.Warning)),
    ),
  );
  const { url, port, grpcUrl } = await runtime.runPromise(MeshServer);
  const health = await runtime.runPromise(HealthRegistry);
  if (grpcUrl !== undefined) nativeGrpcUrls.set(url, grpcUrl);
  return {
    url,
    port,
    grpcUrl,
    health,
    close: async () => {
      nativeGrpcUrls.delete(url);
      await runtime.dispose();
    },
  };
};

/** Runs an effect of the health registry (tests flip statuses with it). */
export const setHealth = (mesh: TestMesh, name: string, status: "SERVING" | "NOT_SERVING") =>
  Effect.runPromise(mesh.health.set(name, status));
