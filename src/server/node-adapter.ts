/**
 * connect-node's request handler (its `connectNodeAdapter`), except for the
 * request's abort signal: connect-node aborts it when the request closes,
 * which is after every call, and `abort()` without a reason builds a
 * DOMException with its stack (about a tenth of a Health/Check's CPU here;
 * connect does the same for its own context, see `shareEndReason`).
 * Here it aborts only when the request closes before its response was
 * ended: the client went away or reset the stream, which is all the
 * handler needs to know. And a request with no usable Host is served
 * (`urlOf`) where connect-node threw. The rest is connect-node's public API
 * (but for `shareEndReason`, which relies on connect's handler context
 * having its `abort`, and leaves a context without one as it is).
 */
import type http from "node:http";
import type http2 from "node:http2";
import { constants } from "node:http2";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ConnectRouterOptions,
  type ContextValues,
  createConnectRouter,
  type HandlerContext,
} from "@connectrpc/connect";
import type { UniversalServerRequest } from "@connectrpc/connect/protocol";
import {
  compressionBrotli,
  compressionGzip,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

export interface NodeAdapterOptions extends ConnectRouterOptions {
  readonly routes: (router: ConnectRouter) => void;
  readonly contextValues: (req: NodeRequest, res: NodeResponse) => ContextValues;
}

/** What an HTTP/2 reset by the client means for the call (connect-node's table). */
const resetCodes: Record<number, [Code, string]> = {
  [constants.NGHTTP2_REFUSED_STREAM]: [Code.Unavailable, "the client refused the stream"],
  [constants.NGHTTP2_CANCEL]: [Code.Canceled, "the client cancelled the call"],
  [constants.NGHTTP2_ENHANCE_YOUR_CALM]: [
    Code.ResourceExhausted,
    "the client asked the server to calm down",
  ],
  [constants.NGHTTP2_INADEQUATE_SECURITY]: [
    Code.PermissionDenied,
    "the client found the security inadequate",
  ],
};

/** Why a request closed before its response ended: made only when that happens. */
const closedEarly = (req: NodeRequest): ConnectError => {
  const rstCode = "stream" in req ? req.stream.rstCode : undefined;
  const [code, message] = (rstCode !== undefined && resetCodes[rstCode]) || [
    Code.Canceled,
    "the client closed the request",
  ];
  const cause = req.errored ?? undefined;
  return new ConnectError(message, code, undefined, undefined, cause);
};

const headersOf = (node: NodeRequest["headers"]): Headers => {
  const headers = new Headers();
  for (const [name, value] of Object.entries(node)) {
    if (value === undefined || name.startsWith(":")) continue;
    if (typeof value === "string") headers.append(name, value);
    else for (const v of value) headers.append(name, v);
  }
  return headers;
};

/**
 * The request's URL. Only its path and query are read; an HTTP/1.0 request
 * may have no Host and any request a malformed one (connect-node threw
 * then, out of the request listener): such a request is served as if it had
 * named localhost.
 */
const urlOf = (req: NodeRequest): string => {
  const scheme = "encrypted" in req.socket && req.socket.encrypted === true ? "https" : "http";
  const authority = ("authority" in req ? req.authority : req.headers.host) ?? "localhost";
  try {
    return new URL(req.url ?? "", `${scheme}://${authority}`).toString();
  } catch {
    return new URL(req.url ?? "", `${scheme}://localhost`).toString();
  }
};

const universalRequest = (
  req: NodeRequest,
  res: NodeResponse,
  contextValues: ContextValues,
): UniversalServerRequest => {
  const controller = new AbortController();
  // HTTP/1.1: the request closes once its body is read, so the response's close is the one
  // that says the exchange is over (https://github.com/nodejs/node/issues/40775).
  (("stream" in req ? req : res) as NodeResponse).once("close", () => {
    if (!res.writableEnded) controller.abort(closedEarly(req));
  });
  return {
    httpVersion: req.httpVersion,
    method: req.method ?? "",
    url: urlOf(req),
    header: headersOf(req.headers),
    body: req.iterator({ destroyOnReturn: false }),
    signal: controller.signal,
    contextValues,
  };
};

/** The reason a call's signal carries once the call has ended normally: made once. */
export const CALL_ENDED = new DOMException("the call has ended", "AbortError");

/**
 * connect ends every call, failed or not, with its context's `abort()`,
 * which with no reason builds a DOMException and its stack per call (about
 * 13 µs of a Health/Check's CPU here). The request gate sees that context
 * before the call runs; from then on a reason-less abort, the normal end,
 * uses the shared reason. An abort with a reason (an error, a deadline) is
 * unchanged.
 */
const shareEndReason = (context: HandlerContext): void => {
  const controller = context as HandlerContext & { abort?: (reason?: unknown) => void };
  const abort = controller.abort;
  if (typeof abort === "function") controller.abort = (reason) => abort(reason ?? CALL_ENDED);
};

/** A request listener for http and http2 servers; false for a path it does not serve. */
export const nodeAdapter = (options: NodeAdapterOptions) => {
  const gate = options.requestGate;
  const router = createConnectRouter({
    acceptCompression: [compressionGzip, compressionBrotli],
    ...options,
    requestGate: (context) => {
      shareEndReason(context);
      return gate?.(context);
    },
  });
  options.routes(router);
  const paths = new Map(router.handlers.map((h) => [h.requestPath, h]));
  return (req: NodeRequest, res: NodeResponse): boolean => {
    const handler = paths.get(req.url?.split("?", 2)[0] ?? "");
    if (handler === undefined) return false;
    handler(universalRequest(req, res, options.contextValues(req, res)))
      .then((ures) => universalResponseToNodeResponse(ures, res))
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code === Code.Aborted) return;
        console.error(
          `handler for rpc ${handler.method.name} of ${handler.service.typeName} failed`,
          reason,
        );
      });
    return true;
  };
};
