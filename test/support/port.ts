/**
 * Calling a port the way the conformance suites do: requests built with
 * `create(XRequestSchema, init)`, answers turned into full response messages,
 * and helpers asserting the typed error a call fails with.
 */
import {
  create,
  type DescMessage,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import type { GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { expect } from "@effect/vitest";
import { type Context, Deferred, Duration, Effect, Queue, Stream } from "effect";
import type { MeshError } from "../../src/common/errors.js";

type Methods<S extends { method: GenServiceMethods }> = S["method"];
type UnaryOf<S extends { method: GenServiceMethods }> = {
  [K in keyof Methods<S>]: Methods<S>[K]["methodKind"] extends "unary" ? K : never;
}[keyof Methods<S>];
type StreamingOf<S extends { method: GenServiceMethods }> = Exclude<keyof Methods<S>, UnaryOf<S>>;
type In<S extends { method: GenServiceMethods }, K extends keyof Methods<S>> = MessageInitShape<
  Methods<S>[K]["input"] & DescMessage
>;
type Out<S extends { method: GenServiceMethods }, K extends keyof Methods<S>> = MessageShape<
  Methods<S>[K]["output"] & DescMessage
>;

export const portCaller = <S extends { method: GenServiceMethods }, I, P>(
  service: S,
  tag: Context.Tag<I, P>,
) => {
  const method = (rpc: PropertyKey) =>
    (service.method as Record<PropertyKey, { input: DescMessage; output: DescMessage }>)[rpc] as {
      input: DescMessage;
      output: DescMessage;
    };
  const port = (p: P, rpc: PropertyKey) =>
    (p as Record<PropertyKey, (req: unknown) => unknown>)[rpc] as (req: unknown) => unknown;

  /** Calls one unary RPC; the answer as a full response message (defaults filled in). */
  const call = <K extends UnaryOf<S>>(
    rpc: K,
    init: In<S, K>,
  ): Effect.Effect<Out<S, K>, MeshError, I> =>
    Effect.gen(function* () {
      const p = yield* tag;
      const m = method(rpc);
      const response = yield* port(p, rpc)(create(m.input, init as never)) as Effect.Effect<
        unknown,
        MeshError
      >;
      return create(m.output, response as never) as Out<S, K>;
    });

  /** Opens one server-streaming RPC; each item as a full response message. */
  const open = <K extends StreamingOf<S>>(
    rpc: K,
    init: In<S, K>,
  ): Stream.Stream<Out<S, K>, MeshError, I> =>
    Stream.unwrap(
      Effect.map(tag, (p) => {
        const m = method(rpc);
        return (
          port(p, rpc)(create(m.input, init as never)) as Stream.Stream<unknown, MeshError>
        ).pipe(Stream.map((item) => create(m.output, item as never) as Out<S, K>));
      }),
    );

  return { call, open };
};

/** The error a call must fail with; a call that succeeds fails the test. */
export const failure = <A, R, T extends MeshError["_tag"]>(
  effect: Effect.Effect<A, MeshError, R>,
  tag: T,
): Effect.Effect<Extract<MeshError, { _tag: T }>, Error, R> =>
  Effect.flip(effect).pipe(
    Effect.mapError(() => new Error(`expected ${tag}, but the call succeeded`)),
    Effect.tap((e) => expect(e._tag, e.message).toBe(tag)),
    Effect.map((e) => e as Extract<MeshError, { _tag: T }>),
  );

/** InvalidArgument with a violation naming each of `fields`. */
export const invalid = <A, R>(
  effect: Effect.Effect<A, MeshError, R>,
  ...fields: ReadonlyArray<string>
) =>
  failure(effect, "InvalidArgument").pipe(
    Effect.tap((e) => {
      const named = e.violations.map((v) => v.field);
      for (const field of fields) expect(named).toContain(field);
    }),
  );

/** How long a watch may take to show a change before the test fails. */
export const WATCH_WAIT = "10 seconds";

/**
 * Runs a watch stream in the background (ended with the test's scope) and
 * returns `next`: the next event other than a heartbeat, or a failure after
 * `wait` (default WATCH_WAIT) or when the stream ends.
 */
export const watching = <A extends { readonly type: number }, R>(
  stream: Stream.Stream<A, MeshError, R>,
  heartbeat: number,
) =>
  Effect.gen(function* () {
    const events = yield* Queue.unbounded<A>();
    const ended = yield* Deferred.make<never, Error>();
    yield* stream.pipe(
      Stream.filter((e) => e.type !== heartbeat),
      Stream.runForEach((e) => Queue.offer(events, e)),
      Effect.matchCauseEffect({
        onFailure: (cause) => Deferred.fail(ended, new Error(`watch failed: ${cause}`)),
        onSuccess: () => Deferred.fail(ended, new Error("watch ended")),
      }),
      Effect.fork,
    );
    return (wait: Duration.DurationInput = WATCH_WAIT) =>
      Effect.raceFirst(Queue.take(events), Deferred.await(ended)).pipe(
        Effect.timeoutFail({
          duration: wait,
          onTimeout: () =>
            new Error(`no watch event within ${Duration.format(Duration.decode(wait))}`),
        }),
      );
  });
