/** Starts a real mesh server on a free port for a test, on embedded backends. */
import { Effect, Layer, Logger, LogLevel, ManagedRuntime } from "effect";
import { appLayer } from "../../src/app.js";
import { defaultConfig, type MeshConfigShape } from "../../src/config.js";
import { HealthRegistry } from "../../src/server/health.js";
import { MeshServer } from "../../src/server/server.js";

export interface TestMesh {
  readonly url: string;
  readonly port: number;
  readonly health: HealthRegistry;
  /** Graceful shutdown, as on SIGTERM. */
  readonly close: () => Promise<void>;
}

export const startMesh = async (overrides: Partial<MeshConfigShape> = {}): Promise<TestMesh> => {
  const config = { ...defaultConfig(), port: 0, ...overrides };
  const runtime = ManagedRuntime.make(
    appLayer(config).pipe(
      Layer.provide(Logger.json),
      Layer.provide(Logger.minimumLogLevel(LogLevel.Warning)),
    ),
  );
  const { url, port } = await runtime.runPromise(MeshServer);
  const health = await runtime.runPromise(HealthRegistry);
  return { url, port, health, close: () => runtime.dispose() };
};

/** Runs an effect of the health registry (tests flip statuses with it). */
export const setHealth = (mesh: TestMesh, name: string, status: "SERVING" | "NOT_SERVING") =>
  Effect.runPromise(mesh.health.set(name, status));
