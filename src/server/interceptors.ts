/**
 * Server interceptors: cross-cutting concerns live here, not in handlers.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { CallInfo } from "./bridge.js";
import { withErrorDetail } from "./errors.js";

/**
 * Last line of the error table: whatever a handler throws leaves as a
 * ConnectError carrying the FlowOrchestrator detail. A raw throw is a bug and
 * becomes INTERNAL with an error id (never the raw message).
 */
export const errorInterceptor =
  (reportDefect: (call: CallInfo, defect: unknown) => ConnectError): Interceptor =>
  (next) =>
  async (req) => {
    const normalize = (e: unknown): ConnectError => {
      if (e instanceof ConnectError) return withErrorDetail(e);
      // The client went away mid-call (its request stream closed early): not a bug here.
      if (req.signal.aborted || (e as { code?: unknown })?.code === "ERR_STREAM_PREMATURE_CLOSE")
        return withErrorDetail(new ConnectError("the client cancelled the call", Code.Canceled));
      return reportDefect(req, e);
    };
    try {
      const res = await next(req);
      if (!res.stream) return res;
      const messages = res.message;
      return {
        ...res,
        message: (async function* () {
          try {
            yield* messages;
          } catch (e) {
            throw normalize(e);
          }
        })(),
      };
    } catch (e) {
      throw normalize(e);
    }
  };
