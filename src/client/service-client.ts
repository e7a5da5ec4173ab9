/**
 * A typed Effect client for one protobuf service: one method per RPC, taking
 * the request (init shape) and returning an Effect (unary) or a Stream
 * (server streaming; a bidi RPC takes a Stream of requests) that fails only
 * with the tagged MeshErrors the
 * service's port uses. So a client can stand in for a port: a mesh node that
 * does not host a service serves it through this client (forwarding).
 *
 * Every call has a deadline: the per-call timeout, never later than the
 * deadline of the call being served (CurrentDeadline), so deadlines shrink
 * across hops. Interrupting the effect cancels the call. UNAVAILABLE is
 * retried on the next node with the given Schedule, only for methods the
 * proto declares free of side effects or idempotent, or when no node could
 * be found at all (nothing was sent); a stream is retried
 * only before its first message (a watch that already delivered would
 * replay); a bidi stream never is (its requests were consumed). Each call continues the trace of the current Effect span.
 */
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescMethodBiDiStreaming,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import type { GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { MethodOptions_IdempotencyLevel as Idempotency } from "@bufbuild/protobuf/wkt";
import { context, ROOT_CONTEXT, TraceFlags, trace } from "@opentelemetry/api";
import { Duration, Effect, FiberRef, Option, Schedule, Stream } from "effect";
import {
  CurrentAuthorization,
  CurrentDeadline,
  CurrentPrincipal,
  FORWARDED_PRINCIPAL,
} from "../common/caller.js";
import { DeadlineExceeded, type MeshError } from "../common/errors.js";
import type { Channel } from "./channel.js";
import { connectToMeshError } from "./errors.js";
import { NO_ENDPOINT } from "./router.js";

export interface CallOptions {
  /** Overrides the client's default timeout for this call. */
  readonly timeout?: Duration.DurationInput;
  /** Extra request headers (gRPC metadata). */
  readonly headers?: Readonly<Record<string, string>>;
}

type Method<M> = M extends { methodKind: "unary"; input: infer I; output: infer O }
  ? I extends DescMessage
    ? O extends DescMessage
      ? (
          request: MessageInitShape<I>,
          options?: CallOptions,
        ) => Effect.Effect<MessageShape<O>, MeshError>
      : never
    : never
  : M extends { methodKind: "server_streaming"; input: infer I; output: infer O }
    ? I extends DescMessage
      ? O extends DescMessage
        ? (
            request: MessageInitShape<I>,
            options?: CallOptions,
          ) => Stream.Stream<MessageShape<O>, MeshError>
        : never
      : never
    : M extends { methodKind: "bidi_streaming"; input: infer I; output: infer O }
      ? I extends DescMessage
        ? O extends DescMessage
          ? (
              requests: Stream.Stream<MessageInitShape<I>>,
              options?: CallOptions,
            ) => Stream.Stream<MessageShape<O>, MeshError>
          : never
        : never
      : never;

export type ClientOf<S extends { method: GenServiceMethods }> = {
  readonly [K in keyof S["method"]]: Method<S["method"][K]>;
};

/** Which node takes a call, and what to do with one that failed. */
export interface Router {
  readonly pick: (service: string) => Effect.Effect<Channel, MeshError>;
  readonly failed: (channel: Channel) => Effect.Effect<void>;
}

export interface ClientSettings {
  readonly router: Router;
  /** Deadline of a unary call when the caller gives none. */
  readonly timeout: Duration.Duration;
  /** Between attempts of a retryable call that found its node UNAVAILABLE. */
  readonly retry: Schedule.Schedule<unknown, MeshError>;
  /** Sent with every call (credentials); a served call's own authorization wins. */
  readonly headers: Readonly<Record<string, string>>;
}

export const isRetryable = (method: DescMethod) =>
  method.idempotency === Idempotency.NO_SIDE_EFFECTS ||
  method.idempotency === Idempotency.IDEMPOTENT;

/** The OpenTelemetry context of the current Effect span (the served call's span in a handler). */
const otelContext = Effect.map(Effect.option(Effect.currentParentSpan), (span) =>
  Option.match(span, {
    onNone: () => ROOT_CONTEXT,
    onSome: (s) =>
      trace.setSpanContext(ROOT_CONTEXT, {
        traceId: s.traceId,
        spanId: s.spanId,
        traceFlags: s.sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
      }),
  }),
);

/** Absolute deadline (epoch ms) of a call: its own timeout, capped by the served call's. */
const deadlineFor = (timeout: Duration.Duration | undefined) =>
  Effect.map(FiberRef.get(CurrentDeadline), (inherited) => {
    const own = timeout === undefined ? undefined : Date.now() + Duration.toMillis(timeout);
    if (own === undefined) return inherited;
    return inherited === undefined ? own : Math.min(own, inherited);
  });

const timeLeft = (deadline: number | undefined, method: DescMethod) =>
  deadline === undefined
    ? Effect.succeed(undefined)
    : deadline - Date.now() > 0
      ? Effect.succeed(deadline - Date.now())
      : Effect.fail(
          new DeadlineExceeded({
            message: `deadline passed before ${method.parent.typeName}/${method.name} was sent`,
          }),
        );

/**
 * Ending the stream early (interruption) must cancel the call at once: an
 * async generator's own `return()` would wait for the next message first.
 */
const cancellable = <A>(messages: AsyncIterable<A>, abort: AbortController): AsyncIterable<A> => ({
  [Symbol.asyncIterator]() {
    const it = messages[Symbol.asyncIterator]();
    return {
      next: () => it.next(),
      return: async () => {
        abort.abort();
        return { done: true, value: undefined };
      },
    };
  },
});

const markFailed = (router: Router, channel: Channel) => (error: MeshError) =>
  error._tag === "Unavailable" ? router.failed(channel) : Effect.void;

export const makeServiceClient = <S extends DescService & { method: GenServiceMethods }>(
  service: S,
  settings: ClientSettings,
): ClientOf<S> => {
  const { router } = settings;
  const client: Record<string, unknown> = {};
  for (const method of service.methods) {
    const retryable = isRetryable(method);
    // The served call's caller goes on with the call: its own credentials, or
    // (mTLS, where there is no header to pass on) its principal, for nodes that trust this one.
    const headersOf = (options?: CallOptions) =>
      Effect.map(
        Effect.zip(FiberRef.get(CurrentAuthorization), FiberRef.get(CurrentPrincipal)),
        ([authorization, principal]) =>
          authorization !== undefined
            ? { ...settings.headers, authorization, ...options?.headers }
            : principal !== undefined
              ? { ...settings.headers, [FORWARDED_PRINCIPAL]: principal, ...options?.headers }
              : { ...settings.headers, ...options?.headers },
      );

    if (method.methodKind === "unary") {
      const unary = method as DescMethodUnary;
      client[method.localName] = (request: MessageInitShape<DescMessage>, options?: CallOptions) =>
        Effect.gen(function* () {
          const input = create(method.input, request);
          const deadline = yield* deadlineFor(
            Duration.decode(options?.timeout ?? settings.timeout),
          );
          const ctx = yield* otelContext;
          const headers = yield* headersOf(options);
          const attempt = Effect.gen(function* () {
            const channel = yield* router.pick(service.typeName);
            const timeoutMs = yield* timeLeft(deadline, method);
            return yield* Effect.tryPromise({
              try: (signal) =>
                context.with(ctx, () =>
                  channel.unary(unary, input, { signal, timeoutMs, headers }),
                ),
              catch: connectToMeshError,
            }).pipe(Effect.tapError(markFailed(router, channel)));
          });
          return yield* Effect.retry(attempt, {
            schedule: settings.retry,
            while: (e) => e._tag === "Unavailable" && (retryable || e.code === NO_ENDPOINT),
          });
        });
    } else if (method.methodKind === "server_streaming") {
      const streaming = method as DescMethodServerStreaming;
      client[method.localName] = (request: MessageInitShape<DescMessage>, options?: CallOptions) =>
        Stream.unwrapScoped(
          Effect.gen(function* () {
            const input = create(method.input, request);
            const deadline = yield* deadlineFor(
              options?.timeout === undefined ? undefined : Duration.decode(options.timeout),
            );
            const ctx = yield* otelContext;
            const headers = yield* headersOf(options);
            const driver = yield* Schedule.driver(settings.retry);
            let received = false;
            const open = Stream.unwrapScoped(
              Effect.gen(function* () {
                const channel = yield* router.pick(service.typeName);
                const timeoutMs = yield* timeLeft(deadline, method);
                const abort = new AbortController();
                const messages = context.with(ctx, () =>
                  channel.stream(streaming, input, {
                    signal: abort.signal,
                    timeoutMs,
                    headers,
                  }),
                );
                return Stream.fromAsyncIterable(
                  cancellable(messages, abort),
                  connectToMeshError,
                ).pipe(
                  Stream.tapError(markFailed(router, channel)),
                  Stream.tap(() => Effect.sync(() => (received = true))),
                );
              }),
            );
            const withRetry = (): Stream.Stream<unknown, MeshError> =>
              open.pipe(
                Stream.catchAll((e) =>
                  e._tag === "Unavailable" && !received && (retryable || e.code === NO_ENDPOINT)
                    ? Stream.unwrap(
                        driver.next(e).pipe(
                          Effect.as(withRetry()),
                          Effect.orElseFail(() => e),
                        ),
                      )
                    : Stream.fail(e),
                ),
              );
            return withRetry();
          }),
        );
    } else if (method.methodKind === "bidi_streaming") {
      const bidi = method as DescMethodBiDiStreaming;
      client[method.localName] = (
        requests: Stream.Stream<MessageInitShape<DescMessage>>,
        options?: CallOptions,
      ) =>
        Stream.unwrapScoped(
          Effect.gen(function* () {
            const deadline = yield* deadlineFor(
              options?.timeout === undefined ? undefined : Duration.decode(options.timeout),
            );
            const ctx = yield* otelContext;
            const headers = yield* headersOf(options);
            const channel = yield* router.pick(service.typeName);
            const timeoutMs = yield* timeLeft(deadline, method);
            const inputs = yield* Stream.toAsyncIterableEffect(
              Stream.map(requests, (r) => create(method.input, r)),
            );
            const abort = new AbortController();
            const messages = context.with(ctx, () =>
              channel.bidi(bidi, inputs, { signal: abort.signal, timeoutMs, headers }),
            );
            return Stream.fromAsyncIterable(cancellable(messages, abort), connectToMeshError).pipe(
              Stream.tapError(markFailed(router, channel)),
            );
          }),
        );
    }
  }
  return client as ClientOf<S>;
};
