import { describe, expect, it } from "@effect/vitest";
import { Chunk, Effect, Fiber, Option, Stream, TestClock } from "effect";
import { HealthRegistry } from "../../src/server/health.js";

/** Lets forked fibers run up to their next wait. */
const settle = TestClock.adjust("1 millis");

describe("health registry", () => {
  it.effect("overall is SERVING until a component reports NOT_SERVING", () =>
    Effect.gen(function* () {
      const health = yield* HealthRegistry;
      expect(yield* health.check("")).toEqual(Option.some("SERVING"));
      yield* health.set("floworchestrator.datastore.v1.DataStoreService", "SERVING");
      yield* health.set("mongodb", "NOT_SERVING");
      expect(yield* health.check("")).toEqual(Option.some("NOT_SERVING"));
      expect(yield* health.check("mongodb")).toEqual(Option.some("NOT_SERVING"));
      yield* health.set("mongodb", "SERVING");
      expect(yield* health.check("")).toEqual(Option.some("SERVING"));
      expect(yield* health.check("unknown")).toEqual(Option.none());
    }).pipe(Effect.provide(HealthRegistry.Default)),
  );

  it.effect("draining turns every status NOT_SERVING", () =>
    Effect.gen(function* () {
      const health = yield* HealthRegistry;
      yield* health.set("a", "SERVING");
      yield* health.drain;
      expect(yield* health.list).toEqual({ "": "NOT_SERVING", a: "NOT_SERVING" });
    }).pipe(Effect.provide(HealthRegistry.Default)),
  );

  it.effect("watch sends the current status, then each change, and heartbeats", () =>
    Effect.gen(function* () {
      const health = yield* HealthRegistry;
      const seen = yield* health.watch("svc").pipe(Stream.take(5), Stream.runCollect, Effect.fork);
      yield* settle;
      yield* health.set("svc", "SERVING");
      yield* settle;
      yield* health.set("other", "NOT_SERVING"); // not svc: no message
      yield* health.set("svc", "SERVING"); // unchanged: no message
      yield* settle;
      yield* health.set("svc", "NOT_SERVING");
      yield* settle;
      yield* TestClock.adjust("50 seconds");
      const statuses = Chunk.toArray(yield* Fiber.join(seen));
      expect(statuses).toEqual([
        "SERVICE_UNKNOWN",
        "SERVING",
        "NOT_SERVING",
        "NOT_SERVING",
        "NOT_SERVING",
      ]);
    }).pipe(Effect.provide(HealthRegistry.Default)),
  );
});
