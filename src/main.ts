/**
 * Entry point: read the configuration, compose the layers, serve until
 * SIGTERM/SIGINT, then shut down gracefully and exit 0.
 */
import { Cause, Effect, Either, Exit, Fiber, Layer, Logger } from "effect";
import { loadConfig, MeshConfig } from "./config.js";
import { HealthRegistry } from "./server/health.js";
import { MeshServer, MeshServerLive } from "./server/server.js";

const config = Effect.runSync(loadConfig());
if (Either.isLeft(config)) {
  process.stderr.write(`${config.left}\n`);
  process.exit(2);
}

const app = MeshServerLive.pipe(
  Layer.provide(HealthRegistry.Default),
  Layer.provide(Layer.succeed(MeshConfig, config.right)),
);

const program = Effect.gen(function* () {
  const { url } = yield* MeshServer;
  yield* Effect.logInfo(`FlowOrchestrator Mesh listening on ${url} (gRPC, gRPC-Web, Connect)`);
  yield* Effect.logInfo(
    `try: npx buf curl --protocol grpc --http2-prior-knowledge ${url}/grpc.health.v1.Health/Check`,
  );
  return yield* Effect.never;
}).pipe(
  Effect.provide(app),
  Effect.provide(Logger.json),
  Logger.withMinimumLogLevel(config.right.logLevel),
);

const fiber = Effect.runFork(program);
const stop = () => Effect.runFork(Fiber.interrupt(fiber));
process.once("SIGTERM", stop);
process.once("SIGINT", stop);

fiber.addObserver((exit) => {
  if (Exit.isInterrupted(exit)) process.exit(0);
  process.stderr.write(`${Cause.pretty(Exit.isFailure(exit) ? exit.cause : Cause.empty)}\n`);
  process.exit(1);
});
