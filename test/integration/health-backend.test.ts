/**
 * Health follows a real backend: a mesh on a Kafka broker of the test's own
 * reports its MessageBus SERVING; the broker is killed (SIGKILL) → the
 * service's `grpc.health.v1` status and the overall one go NOT_SERVING
 * within the check interval, `/readyz` answers 503 and GetHealth names the
 * failing component with its last error; the broker starts again → SERVING
 * and ready again, without restarting the mesh.
 */
import { describe, expect, it } from "@effect/vitest";
import { Duration, Effect, Schedule } from "effect";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { TelemetryService } from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.js";
import { defaultConfig } from "../../src/config.js";
import { clientFor } from "../support/clients.js";
import { privateBroker } from "../support/kafka-broker.js";
import { startMesh } from "../support/mesh.js";

/** Polls `check` until it holds; fails after `seconds`. */
const until = (label: string, seconds: number, check: () => Promise<boolean>) =>
  Effect.tryPromise(check).pipe(
    Effect.filterOrFail(
      (ok) => ok,
      () => new Error(`not yet: ${label}`),
    ),
    Effect.retry(Schedule.spaced("200 millis")),
    Effect.timeoutFail({
      duration: Duration.seconds(seconds),
      onTimeout: () => new Error(`${label}: not within ${seconds} s`),
    }),
  );

describe("health follows a real backend", () => {
  it.scopedLive(
    "Kafka killed: MessageBus NOT_SERVING, /readyz 503; back: SERVING, ready",
    () =>
      Effect.gen(function* () {
        const broker = yield* privateBroker;
        yield* Effect.promise(() => broker.start());
        const defaults = defaultConfig();
        const mesh = yield* Effect.acquireRelease(
          Effect.promise(() =>
            startMesh({
              messaging: {
                ...defaults.messaging,
                kafkaBrokers: [broker.address],
                sendTimeout: Duration.seconds(3),
              },
            }),
          ),
          (m) => Effect.promise(() => m.close()),
        );
        const health = clientFor(Health, "gRPC (h2c)", mesh.url);
        const busStatus = async () =>
          (await health.check({ service: MessageBusService.typeName })).status;
        const overall = async () => (await health.check({})).status;
        const readyz = async () => (await fetch(`${mesh.url}/readyz`)).status;

        yield* until("SERVING at first", 20, async () => (await busStatus()) === Status.SERVING);
        expect(yield* Effect.promise(readyz)).toBe(200);

        yield* Effect.promise(() => broker.kill());
        // Checks run every 2 s with a 3 s timeout: well within 10 s.
        yield* until("NOT_SERVING after the kill", 10, async () => {
          return (await busStatus()) === Status.NOT_SERVING;
        });
        expect(yield* Effect.promise(overall)).toBe(Status.NOT_SERVING);
        expect(yield* Effect.promise(readyz)).toBe(503);
        const report = yield* Effect.promise(() =>
          clientFor(TelemetryService, "Connect over HTTP/1.1", mesh.url).getHealth({}),
        );
        const bus = report.components.find((c) => c.name === MessageBusService.typeName);
        expect(bus?.lastError).not.toBe("");
        expect(bus?.lastErrorTime).toBeDefined();

        yield* Effect.promise(() => broker.start());
        yield* until("SERVING once back", 60, async () => (await busStatus()) === Status.SERVING);
        yield* until("ready once back", 10, async () => (await readyz()) === 200);
        expect(yield* Effect.promise(overall)).toBe(Status.SERVING);
      }),
    150_000,
  );
});
