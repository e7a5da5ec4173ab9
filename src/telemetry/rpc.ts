/**
 * Every RPC observed, whichever protocol carried it: a server span named
 * `{service}/{method}` following the OpenTelemetry RPC conventions
 * (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`),
 * continuing the caller's trace from W3C `traceparent` / `tracestate`
 * request headers; and the `rpc.server.duration` histogram (milliseconds)
 * with the `rpc.server.requests` counter, by service, method and status
 * code. A server stream's span and duration end when the stream does.
 *
 * The span is put in the call's context values (`rpcSpanKey`) so the bridge
 * can tag log lines with its trace and span ids.
 *
 * The span and the duration end once the response has been sent (the Node
 * response's `close`, given to the interceptor in `responseSentKey`), not
 * when the handler returns: the time to encode and write the answer belongs
 * to the call, and ending the span (and handing it to the batch processor)
 * before that would put the work in front of the answer. Node flushes an
 * HTTP/2 response from a native immediate, so even `setImmediate` would
 * still run first.
 */

import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import {
  type Attributes,
  INVALID_SPAN_CONTEXT,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  trace,
} from "@opentelemetry/api";
import { onEnd } from "../server/interceptors.js";
import type { TelemetryShape } from "./pipeline.js";

export const rpcSpanKey = createContextKey<Span | undefined>(undefined, {
  description: "the server span of the call",
});

/**
 * Runs a function once the call's response has been sent or abandoned: set
 * per request by the server (`whenClosed`). Without it the call is
 * finished as soon as the handler is done.
 */
export const responseSentKey = createContextKey<((f: () => void) => void) | undefined>(undefined, {
  description: "runs a function once the call's response has been sent",
});

/**
 * For `responseSentKey`: the Node response's `close` event, emitted once the
 * response has been sent or the stream was abandoned. Holds one function; a
 * function given after `close` runs at once.
 */
export const whenClosed = (res: { once(event: "close", listener: () => void): unknown }) => {
  let closed = false;
  let pending: (() => void) | undefined;
  res.once("close", () => {
    closed = true;
    pending?.();
  });
  return (f: () => void) => {
    if (closed) f();
    else pending = f;
  };
};

const headerGetter: TextMapGetter<Headers> = {
  keys: (headers) => [...headers.keys()],
  get: (headers, key) => headers.get(key) ?? undefined,
};

/** gRPC's status code of a call that succeeded (Connect's Code has no member for it). */
export const OK = 0;

export type Protocol = "grpc" | "grpc-web" | "connect";

/** `grpc`, `grpc-web` or `connect`, from the request's content type. */
export const protocolOf = (headers: Headers): Protocol => {
  const type = headers.get("content-type") ?? "";
  if (type.startsWith("application/grpc-web")) return "grpc-web";
  if (type.startsWith("application/grpc")) return "grpc";
  return "connect";
};

/** One observed call: its span, and `finish` to call once with how it ended. */
export interface ObservedCall {
  readonly span: Span;
  /** `code`: the gRPC status code, 0 (OK) or a Connect `Code`. */
  readonly finish: (code: number, message?: string) => void;
}

export interface RpcTelemetry {
  /** Observes a call from its first header on: `carrier` holds the trace context headers. */
  readonly start: <C>(
    service: string,
    method: string,
    protocol: Protocol,
    carrier: C,
    getter: TextMapGetter<C>,
  ) => ObservedCall;
  /** Observes every call Connect serves. */
  readonly interceptor: Interceptor;
}

export const rpcTelemetry = (telemetry: TelemetryShape): RpcTelemetry => {
  const duration = telemetry.meter.createHistogram("rpc.server.duration", {
    description: "Duration of RPCs handled by the mesh, until the response has been sent",
    unit: "ms",
    // Sub-millisecond resolution: most mesh calls take well under 5 ms.
    advice: {
      explicitBucketBoundaries: [
        0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
      ],
    },
  });
  // Counted here and reported when the metrics are collected: one recording per call
  // (the histogram's) instead of two. The series are bounded: routed methods × protocols × codes.
  const counts = new Map<string, { readonly labels: Attributes; n: number }>();
  telemetry.meter
    .createObservableCounter("rpc.server.requests", {
      description: "RPCs handled by the mesh, by service, method and status code",
    })
    .addCallback((result) => {
      for (const { labels, n } of counts.values()) result.observe(n, labels);
    });

  const attributesOf = (service: string, method: string, protocol: Protocol): Attributes => ({
    "rpc.system": protocol === "connect" ? "connect_rpc" : "grpc",
    "rpc.service": service,
    "rpc.method": method,
    "fo.rpc.protocol": protocol,
  });

  const start: RpcTelemetry["start"] = (service, method, protocol, carrier, getter) => {
    const parent = telemetry.propagator.extract(ROOT_CONTEXT, carrier, getter);
    const name = `${service}/${method}`;
    // With no span exported, a span would be built and dropped on every call: the call goes on
    // in its caller's trace (logs and the next hop see that), as an unsampled hop does.
    const span = telemetry.exportsSpans
      ? telemetry.tracer.startSpan(
          name,
          { kind: SpanKind.SERVER, attributes: attributesOf(service, method, protocol) },
          parent,
        )
      : trace.wrapSpanContext(trace.getSpanContext(parent) ?? INVALID_SPAN_CONTEXT);
    const started = performance.now();
    const finish = (code: number, message?: string) => {
      if (span.isRecording()) {
        span.setAttribute("rpc.grpc.status_code", code);
        if (code !== OK)
          span.setStatus({
            code: SpanStatusCode.ERROR,
            message: `${Code[code]}: ${message ?? ""}`,
          });
        span.end();
      }
      const key = `${name}|${protocol}|${code}`;
      let count = counts.get(key);
      if (count === undefined) {
        // Frozen, so the metrics SDK hashes these attributes once, not on every record
        // (patches/@opentelemetry+sdk-metrics*.patch).
        const labels = Object.freeze({
          ...attributesOf(service, method, protocol),
          "rpc.grpc.status_code": code,
        });
        count = { labels, n: 0 };
        counts.set(key, count);
      }
      count.n++;
      duration.record(performance.now() - started, count.labels);
    };
    return { span, finish };
  };

  return {
    start,
    interceptor: (next) => (req) => {
      const call = start(
        req.service.typeName,
        req.method.name,
        protocolOf(req.header),
        req.header,
        headerGetter,
      );
      req.contextValues.set(rpcSpanKey, call.span);
      const sent = req.contextValues.get(responseSentKey) ?? ((f: () => void) => f());
      return onEnd(
        () => next(req),
        (error) => {
          if (error === undefined) return sent(() => call.finish(OK));
          const e = ConnectError.from(error);
          sent(() => call.finish(e.code, e.rawMessage));
        },
      );
    },
  };
};
