/**
 * Entry point: read the configuration, compose the layers, serve until
 * SIGTERM/SIGINT, then shut down gracefully and exit 0.
 */
import { Cause, Effect, Either, Exit, Fiber, Logger } from "effect";
import { appLayer } from "./app.js";
import { loadConfig } from "./config.js";
import { MeshServer } from "./server/server.js";
import { jsonLogs } from "./telemetry/logs.js";

const config = Effect.runSync(loadConfig());
if (Either.isLeft(config)) {
  process.stderr.write(`${config.left}\n`);
  process.exit(2);
}

const program = Effect.gen(function* () {
  const { url, grpcUrl } = yield* MeshServer;
  yield* Effect.logInfo(
    `FlowOrchestrator Mesh listening on ${url} (gRPC, gRPC-Web, Connect)${
      grpcUrl === undefined ? "" : `, native gRPC on ${grpcUrl}`
    }`,
  );
  yield* Effect.logInfo(
    `try: npx buf curl --protocol grpc --http2-prior-knowledge ${url}/grpc.health.v1.Health/Check`,
  );
  return yield* Effect.never;
}).pipe(
  Effect.provide(appLayer(config.right)),
  Effect.provide(jsonLogs),
  Logger.withMinimumLogLevel(config.right.logLevel),
);

/** An error's message, or its cause's when it has none of its own (a backend's failure). */
const reason = (error: unknown): string =>
  error instanceof Error
    ? error.message || (error.cause === undefined ? error.name : reason(error.cause))
    : String(error);

const fiber = Effect.runFork(program);
const stop = () => Effect.runFork(Fiber.interrupt(fiber));
process.once("SIGTERM", stop);
process.once("SIGINT", stop);

fiber.addObserver((exit) => {
  // Stopped by a signal. A start-up failure interrupts the layers being built beside the
  // failing one, so its cause holds interruptions too: only an interruption alone is a stop.
  if (Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)) process.exit(0);
  // Start-up failed (port taken, backend unreachable): one line, not a stack trace.
  const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : "exited unexpectedly";
  process.stderr.write(`fatal: ${reason(error)}\n`);
  process.exit(1);
});
