/** Tier 1: boundedCall, the bound on every Hazelcast and Kafka driver call. */
import { Cause, Effect, Exit, Fiber } from "effect";
import { describe, expect, it } from "vitest";
import { boundedCall } from "../../src/common/bounded.js";

class Offline extends Error {}

const settings = {
  timeout: "200 millis",
  onTimeout: (last: unknown) => `timed out after ${last instanceof Error ? last.message : "none"}`,
  onError: (e: unknown) =>
    e instanceof TypeError ? Effect.die(e) : Effect.fail(`failed: ${(e as Error).message}`),
} as const;

const exitOf = <A>(effect: Effect.Effect<A, string>) => Effect.runPromise(Effect.exit(effect));

describe("boundedCall", () => {
  it("succeeds with the call's value", async () => {
    const exit = await exitOf(boundedCall({ ...settings, op: async () => 42 }));
    expect(exit).toEqual(Exit.succeed(42));
  });

  it("maps a rejection, or a synchronous throw, with onError; a defect stays a defect", async () => {
    const rejected = await exitOf(
      boundedCall({ ...settings, op: () => Promise.reject(new Error("refused")) }),
    );
    expect(rejected).toEqual(Exit.fail("failed: refused"));
    const thrown = await exitOf(
      boundedCall({
        ...settings,
        op: () => {
          throw new Error("at once");
        },
      }),
    );
    expect(thrown).toEqual(Exit.fail("failed: at once"));
    const defect = await exitOf(
      boundedCall({ ...settings, op: () => Promise.reject(new TypeError("bug")) }),
    );
    expect(Exit.isFailure(defect) && Cause.isDie(defect.cause)).toBe(true);
  });

  it("tries again after the errors retryAfter names, within the bound", async () => {
    let attempts = 0;
    const exit = await exitOf(
      boundedCall({
        ...settings,
        op: async () => {
          attempts++;
          if (attempts < 3) throw new Offline("offline");
          return "connected";
        },
        retryAfter: (e) => (e instanceof Offline ? 10 : undefined),
      }),
    );
    expect(exit).toEqual(Exit.succeed("connected"));
    expect(attempts).toBe(3);
  });

  it("fails with onTimeout, given the last error, when the bound passes; the call's signal aborts", async () => {
    let signal: AbortSignal | undefined;
    const never = await exitOf(
      boundedCall({
        ...settings,
        op: (s) => {
          signal = s;
          return new Promise<never>(() => {});
        },
      }),
    );
    expect(never).toEqual(Exit.fail("timed out after none"));
    expect(signal?.aborted).toBe(true);
    const offline = await exitOf(
      boundedCall({
        ...settings,
        op: () => Promise.reject(new Offline("still offline")),
        retryAfter: () => 20,
      }),
    );
    expect(offline).toEqual(Exit.fail("timed out after still offline"));
  });

  it("bounds calls that share a timer one by one: each in time, none cut short by another", async () => {
    const started = performance.now();
    const never = () => new Promise<never>(() => {});
    // Due in the same instant: one slot of the shared timers.
    const results = await Promise.all([
      ...Array.from({ length: 50 }, () => exitOf(boundedCall({ ...settings, op: never }))),
      exitOf(
        boundedCall({
          ...settings,
          op: () => new Promise((resolve) => setTimeout(() => resolve("late but in time"), 150)),
        }),
      ),
    ]);
    const elapsed = performance.now() - started;
    expect(results.slice(0, 50)).toEqual(Array(50).fill(Exit.fail("timed out after none")));
    expect(results[50]).toEqual(Exit.succeed("late but in time"));
    expect(elapsed).toBeGreaterThanOrEqual(200);
    // A settled call leaves no timer armed: an idle process could exit at once.
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = timers();
    const settled = await exitOf(
      boundedCall({ ...settings, timeout: "1 hour", op: async () => 1 }),
    );
    expect(settled).toEqual(Exit.succeed(1));
    expect(timers()).toBe(before);
  });

  it("interruption aborts the call's signal and stops retrying", async () => {
    let signal: AbortSignal | undefined;
    let attempts = 0;
    await Effect.runPromise(
      Effect.gen(function* () {
        const fiber = yield* Effect.fork(
          boundedCall({
            ...settings,
            timeout: "10 seconds",
            op: (s) => {
              signal = s;
              attempts++;
              return Promise.reject(new Offline("offline"));
            },
            retryAfter: () => 5,
          }),
        );
        yield* Effect.sleep("30 millis");
        yield* Fiber.interrupt(fiber);
        const seen = attempts;
        yield* Effect.sleep("30 millis");
        expect(attempts).toBe(seen);
        expect(signal?.aborted).toBe(true);
      }),
    );
  });

  it("interruption of a call that cannot be aborted ends the fiber at once; its answer is dropped", async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = timers();
    let answer: (v: number) => void = () => {};
    const answered = new Promise<number>((resolve) => {
      answer = resolve;
    });
    const exit = await Effect.runPromise(
      Effect.gen(function* () {
        const fiber = yield* Effect.fork(
          boundedCall({ ...settings, timeout: "1 hour", abortable: false, op: () => answered }),
        );
        yield* Effect.sleep("10 millis");
        return yield* Fiber.interrupt(fiber);
      }),
    );
    expect(Exit.isInterrupted(exit)).toBe(true);
    // The call runs its course; once it answers, its bound is gone with it.
    answer(1);
    await answered;
    await new Promise((resolve) => setImmediate(resolve));
    expect(timers()).toBe(before);
  });
});
