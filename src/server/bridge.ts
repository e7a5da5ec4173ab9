/**
 * The Effect ↔ Connect bridge, the one place where port effects become
 * Connect handler results. Unary calls run with the call's abort signal (a
 * client that leaves or a passed deadline interrupts the work); server
 * streams end when the client goes away or the server shuts down.
 */
import { randomUUID } from "node:crypto";
import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";
import { makeExternalSpan } from "@effect/opentelemetry/Tracer";
import { isSpanContextValid } from "@opentelemetry/api";
import {
  Cause,
  Context,
  Effect,
  Exit,
  FiberId,
  FiberRef,
  FiberRefs,
  Option,
  Runtime,
  Stream,
  Tracer,
} from "effect";
import {
  authorizationKey,
  CurrentAuthorization,
  CurrentClient,
  CurrentDeadline,
  CurrentPrincipal,
  peerKey,
} from "../common/caller.js";
import type { MeshError } from "../common/errors.js";
import { rpcSpanKey } from "../telemetry/rpc.js";
import { principalKey } from "./auth.js";
import { internalError, meshErrorToConnect } from "./errors.js";

export interface Bridge<R> {
  /**
   * Runs a unary effect for a handler; failures become ConnectErrors via the error table. An
   * effect that completes synchronously answers (or throws) at once, else a promise does.
   */
  readonly unary: <A>(
    ctx: HandlerContext,
    effect: Effect.Effect<A, MeshError, R>,
  ) => A | Promise<A>;
  /**
   * The service `tag` names when the application's runtime holds it, so a
   * handler calls its port directly instead of looking it up per call.
   */
  readonly service: <I, S>(tag: Context.Tag<I, S>) => S | undefined;
  /** Turns a stream into the async iterable a server-streaming handler returns. */
  readonly stream: <A>(
    ctx: HandlerContext,
    stream: Stream.Stream<A, MeshError, R>,
  ) => AsyncIterable<A>;
}

/** Which RPC a defect happened in: handler contexts and interceptor requests both have it. */
export type CallInfo = Pick<HandlerContext, "service" | "method">;

/**
 * Logs a bug with a fresh error id and returns the INTERNAL error the caller
 * gets: generic message, same id, no detail of the cause.
 */
export const makeDefectReporter =
  <R>(runtime: Runtime.Runtime<R>) =>
  (call: CallInfo, defect: unknown): ConnectError => {
    const errorId = randomUUID();
    Runtime.runSync(runtime)(
      Effect.logError("unhandled defect in handler", defect).pipe(
        Effect.annotateLogs({
          error_id: errorId,
          rpc: `${call.service.typeName}/${call.method.name}`,
        }),
      ),
    );
    return internalError(errorId);
  };

/**
 * Runs a function once the call is cancelled (its client left, its deadline
 * passed) and returns what unregisters it. Set by a transport that learns of
 * cancellation without an AbortSignal (grpc-js: its call's `cancelled`
 * event), so a call still running after the handler returned does not make
 * one: an AbortSignal and its listener cost ~15 µs per call here. Without it
 * the call's signal is used.
 */
export const onCancelKey = createContextKey<((f: () => void) => () => void) | undefined>(
  undefined,
  { description: "registers a function to run when the call is cancelled" },
);

const onCancel = (ctx: HandlerContext, f: () => void): (() => void) => {
  const hook = ctx.values.get(onCancelKey);
  if (hook !== undefined) return hook(f);
  const { signal } = ctx;
  if (signal.aborted) {
    f();
    return () => {};
  }
  signal.addEventListener("abort", f, { once: true });
  return () => signal.removeEventListener("abort", f);
};

/** Completes when the signal aborts (immediately if it already has). */
const whenAborted = (signal: AbortSignal): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (signal.aborted) return resume(Effect.void);
    const onAbort = () => resume(Effect.void);
    signal.addEventListener("abort", onAbort, { once: true });
    return Effect.sync(() => signal.removeEventListener("abort", onAbort));
  });

/** A client is its principal when authenticated, else its connection. */
const clientOf = (ctx: HandlerContext) => {
  const principal = ctx.values.get(principalKey);
  return principal === undefined ? ctx.values.get(peerKey) : `principal:${principal}`;
};

const authorizationOf = (ctx: HandlerContext) => {
  const given = ctx.values.get(authorizationKey);
  return given !== null ? given : (ctx.requestHeader.get("authorization") ?? undefined);
};

const deadlineOf = (ctx: HandlerContext) => {
  const left = ctx.timeoutMs();
  return left === undefined ? undefined : Date.now() + left;
};

/**
 * The runtime one call runs on: the application's, plus the caller's
 * identity (CurrentClient, CurrentPrincipal, CurrentAuthorization), its
 * deadline in CurrentDeadline, the call's server span as the parent of
 * backend spans (log lines take their trace ids from it: telemetry/logs.ts). Set as the fiber's initial
 * state rather than with `Effect.locally`, which would add an
 * acquire/release step per value to every call.
 */
const callRuntime = <R>(runtime: Runtime.Runtime<R>, ctx: HandlerContext): Runtime.Runtime<R> =>
  Runtime.make({
    context: callContext(runtime, ctx),
    runtimeFlags: runtime.runtimeFlags,
    fiberRefs: callRefs(runtime.fiberRefs, FiberId.none, ctx),
  });

/** A call in no trace has no parent to give (and the context is not copied for nothing). */
const callContext = <R>(runtime: Runtime.Runtime<R>, ctx: HandlerContext) => {
  const span = ctx.values.get(rpcSpanKey)?.spanContext();
  return span !== undefined && isSpanContextValid(span)
    ? Context.add(runtime.context, Tracer.ParentSpan, makeExternalSpan(span))
    : runtime.context;
};

/** The call's values on `refs`, as fiber `id` sets them; with `context`, the call's context too. */
const callRefs = (
  refs: FiberRefs.FiberRefs,
  id: FiberId.Single,
  ctx: HandlerContext,
  context?: Context.Context<never>,
) => {
  const set = <A>(ref: FiberRef.FiberRef<A>, value: A) => [ref, [[id, value]]] as const;
  const values = [
    set(CurrentClient, clientOf(ctx)),
    set(CurrentPrincipal, ctx.values.get(principalKey)),
    set(CurrentAuthorization, authorizationOf(ctx)),
    set(CurrentDeadline, deadlineOf(ctx)),
  ] as const;
  return FiberRefs.updateManyAs(refs, {
    entries: context === undefined ? values : [...values, set(FiberRef.currentContext, context)],
  });
};

/**
 * How a unary call's fiber is forked: the values `callRuntime` gives, set
 * on the fiber's own copy of the refs instead of on a runtime built for
 * the call (which `runFork` would then copy again).
 */
const callFork = <R>(runtime: Runtime.Runtime<R>, ctx: HandlerContext): Runtime.RunForkOptions => {
  const context = callContext(runtime, ctx);
  return {
    updateRefs: (refs, id) =>
      callRefs(refs, id, ctx, context === runtime.context ? undefined : context),
  };
};

/**
 * @param runtime  the application's runtime, built once from its layers
 * @param shutdown aborted when the server starts a graceful shutdown: open streams end then
 */
export const makeBridge = <R>(runtime: Runtime.Runtime<R>, shutdown: AbortSignal): Bridge<R> => {
  const reportDefect = makeDefectReporter(runtime);

  const toConnectError = (cause: Cause.Cause<MeshError>, ctx: HandlerContext): ConnectError => {
    const failure = Cause.failureOption(cause);
    if (Option.isSome(failure)) return meshErrorToConnect(failure.value);
    if (Cause.isInterruptedOnly(cause)) {
      // Interrupted because the call's signal fired: report what fired it (the deadline,
      // or the client cancelling), as Connect itself would.
      return ctx.signal.aborted
        ? ConnectError.from(ctx.signal.reason, Code.Canceled)
        : new ConnectError("server is shutting down", Code.Unavailable);
    }
    return reportDefect(ctx, cause);
  };

  return {
    unary: (ctx, effect) => {
      const fiber = Runtime.runFork(runtime)(effect, callFork(runtime, ctx));
      const settle = <A>(exit: Exit.Exit<A, MeshError>) => {
        if (Exit.isSuccess(exit)) return exit.value;
        throw toConnectError(exit.cause, ctx);
      };
      // Most calls on the embedded backends finish in the fork itself: their answer goes back
      // with no promise, and no listener on the call's signal.
      const exit = fiber.unsafePoll();
      if (exit !== null) return settle(exit);
      return new Promise((resolve, reject) => {
        const forget = onCancel(ctx, () => fiber.unsafeInterruptAsFork(FiberId.none));
        fiber.addObserver((exit) => {
          forget();
          try {
            resolve(settle(exit));
          } catch (e) {
            reject(e);
          }
        });
      });
    },
    service: (tag) => Option.getOrUndefined(Context.getOption(runtime.context, tag)),
    stream: (ctx, stream) =>
      stream.pipe(
        Stream.interruptWhen(Effect.race(whenAborted(ctx.signal), whenAborted(shutdown))),
        // toAsyncIterable rejects with Cause.squash, which is the ConnectError we fail with.
        Stream.catchAllCause((cause) => Stream.fail(toConnectError(cause, ctx))),
        Stream.toAsyncIterableRuntime(callRuntime(runtime, ctx)),
      ),
  };
};
