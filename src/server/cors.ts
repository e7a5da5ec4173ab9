/**
 * CORS for browser clients (Connect and gRPC-Web over HTTP/1.1 or HTTP/2).
 * Uses Connect's own lists of the headers and methods its protocols need.
 */
import type { IncomingHttpHeaders } from "node:http";
import { cors } from "@connectrpc/connect";

/** Headers our own features add on top of Connect's (auth, W3C trace context). */
const extraAllowedHeaders = ["Authorization", "Traceparent", "Tracestate"];

export interface CorsDecision {
  /** Headers to set on the response. */
  readonly headers: Record<string, string>;
  /** A preflight is answered here, with this status, and never reaches the router. */
  readonly preflight?: 204 | 403;
}

/**
 * @param allowed configured origins; `*` allows any origin. Empty: CORS is off
 *   (same-origin pages, such as the mesh's own console, still work).
 */
export const makeCors = (allowed: ReadonlyArray<string>) => {
  const any = allowed.includes("*");
  const isAllowed = (origin: string) => any || allowed.includes(origin);
  return (method: string | undefined, headers: IncomingHttpHeaders): CorsDecision => {
    const origin = headers.origin;
    const isPreflight =
      method === "OPTIONS" && headers["access-control-request-method"] !== undefined;
    if (origin === undefined) return { headers: {} };
    if (!isAllowed(origin)) return isPreflight ? { headers: {}, preflight: 403 } : { headers: {} };
    const base = { "Access-Control-Allow-Origin": any ? "*" : origin, Vary: "Origin" };
    if (!isPreflight) {
      return {
        headers: { ...base, "Access-Control-Expose-Headers": cors.exposedHeaders.join(", ") },
      };
    }
    return {
      preflight: 204,
      headers: {
        ...base,
        "Access-Control-Allow-Methods": cors.allowedMethods.join(", "),
        "Access-Control-Allow-Headers": [...cors.allowedHeaders, ...extraAllowedHeaders].join(", "),
        "Access-Control-Max-Age": "7200",
      },
    };
  };
};
