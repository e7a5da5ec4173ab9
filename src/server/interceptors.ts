/**
 * Server interceptors: cross-cutting concerns live here, not in handlers.
 */
import {
  Code,
  ConnectError,
  type Interceptor,
  type StreamResponse,
  type UnaryResponse,
} from "@connectrpc/connect";
import type { CallInfo } from "./bridge.js";
import { withErrorDetail } from "./errors.js";

export type ReportDefect = (call: CallInfo, defect: unknown) => ConnectError;

/**
 * The error a call that threw `e` ends with: a ConnectError carrying the
 * FlowOrchestrator detail. `aborted`: the call's signal fired.
 */
export const callError = (
  call: CallInfo,
  e: unknown,
  aborted: boolean,
  reportDefect: ReportDefect,
): ConnectError => {
  if (e instanceof ConnectError) return withErrorDetail(e);
  // The client went away mid-call (its request stream closed early): not a bug here.
  if (aborted || (e as { code?: unknown })?.code === "ERR_STREAM_PREMATURE_CLOSE")
    return withErrorDetail(new ConnectError("the client cancelled the call", Code.Canceled));
  return reportDefect(call, e);
};

/**
 * Last line of the error table: whatever a handler throws leaves as a
 * ConnectError carrying the FlowOrchestrator detail. A raw throw is a bug and
 * becomes INTERNAL with an error id (never the raw message).
 */
export const errorInterceptor =
  (reportDefect: ReportDefect): Interceptor =>
  (next) =>
  (req) => {
    const normalize = (e: unknown) => callError(req, e, req.signal.aborted, reportDefect);
    return called(() => next(req)).then(
      (res) => (res.stream ? { ...res, message: mapErrors(res.message, normalize) } : res),
      (e: unknown) => {
        throw normalize(e);
      },
    );
  };

/** `call()`, with a synchronous throw as a rejection. */
const called = <R>(call: () => Promise<R>): Promise<R> => {
  try {
    return call();
  } catch (e) {
    return Promise.reject(e);
  }
};

async function* mapErrors<A>(messages: AsyncIterable<A>, f: (e: unknown) => unknown) {
  try {
    yield* messages;
  } catch (e) {
    throw f(e);
  }
}

/**
 * The response of `call()` (the next handler), with `end` called once when the call is over:
 * when it fails before answering, when a unary call answers, or when a
 * server stream ends, fails or is cancelled by the client (`error` is what
 * it failed with, if anything).
 */
export const onEnd = <R extends UnaryResponse | StreamResponse>(
  call: () => Promise<R>,
  end: (error?: unknown) => void,
): Promise<R> =>
  // Promise reactions rather than an async function: every call of the one port runs this.
  called(call).then(
    (res) => {
      if (!res.stream) {
        end();
        return res;
      }
      return { ...res, message: endsWith(res.message, end) };
    },
    (error: unknown) => {
      end(error);
      throw error;
    },
  );

async function* endsWith<A>(messages: AsyncIterable<A>, end: (error?: unknown) => void) {
  let failure: unknown;
  try {
    yield* messages;
  } catch (error) {
    failure = error;
    throw error;
  } finally {
    // A stream the client cancelled ends here without an error of its own.
    end(failure);
  }
}
