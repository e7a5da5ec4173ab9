/**
 * Forwarding without decoding. A node relays each call for a service it
 * does not host, as the call came, to a node that hosts it: the request's
 * headers and body go out on one HTTP/2 connection per node, and the
 * response's headers, body and trailers come back in whichever protocol the
 * caller spoke (gRPC, gRPC-Web, Connect), as a proxy in front of a gRPC
 * service does. The hop does only what a hop must:
 *
 * - The caller is authenticated and held to its fair share (auth.ts,
 *   limits.ts) as for any call. It goes on with its own `authorization`, or,
 *   with mTLS, its principal in `fo-forwarded-principal`; that header is
 *   never passed on from the caller.
 * - The call gets a server span continuing the caller's trace, and the
 *   `rpc.server.*` metrics by the status code the hosting node answered;
 *   the next node continues the trace from this span.
 * - The deadline goes on, shrunk by the time spent here. When it passes
 *   before the answer, the caller gets DEADLINE_EXCEEDED and the call is
 *   cancelled downstream, as it is when the caller goes away.
 * - A node that cannot be reached sits out its cooldown (client/router.ts),
 *   and the call goes to the next node when sending it again is safe: it
 *   never reached the node, or its method is free of side effects or
 *   idempotent. An error the node answered with goes back as it is.
 *
 * What the relay does not take, Connect serves through the service's
 * forwarding port (the typed client), which decodes: calls refused here
 * (Connect refuses them again, in the caller's protocol), content types and
 * methods the relay does not know, and calls no node is known for yet.
 */
import type http from "node:http";
import http2 from "node:http2";
import { gunzipSync } from "node:zlib";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  codeFromHttpStatus,
  codeToHttpStatus,
  endStreamFlag,
  endStreamFromJson,
  endStreamToJson,
  errorFromJsonBytes,
  errorToJsonBytes,
  parseTimeout as parseConnectTimeout,
  parseContentType as parseConnectType,
} from "@connectrpc/connect/protocol-connect";
import {
  findTrailerError,
  parseTimeout as parseGrpcTimeout,
  parseContentType as parseGrpcType,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
import {
  parseContentType as parseGrpcWebType,
  trailerFlag,
  trailerParse,
  trailerSerialize,
} from "@connectrpc/connect/protocol-grpc-web";
import {
  ROOT_CONTEXT,
  type TextMapGetter,
  type TextMapPropagator,
  trace,
} from "@opentelemetry/api";
import type { ChannelTls } from "../client/channel.js";
import { RETRY_BACKOFF } from "../client/MeshClient.js";
import type { RegistryRouter } from "../client/router.js";
import { isRetryable } from "../client/service-client.js";
import { FORWARDED_PRINCIPAL, peerName } from "../common/caller.js";
import { DeadlineExceeded, Unavailable } from "../common/errors.js";
import { OK, type Protocol } from "../telemetry/rpc.js";
import { meshErrorToConnect } from "./errors.js";
import { type Handler, SESSION_WINDOW, STREAM_WINDOW, writeHead } from "./http.js";
import type { Admission, Policy } from "./policy.js";
import { clientCertificateName } from "./tls.js";

export interface RelayOptions {
  /** The services this node relays (the ones it does not host). */
  readonly services: ReadonlyArray<DescService>;
  readonly route: Pick<RegistryRouter, "next" | "down">;
  /** Authentication, fair shares and telemetry, as for the node's own calls. */
  readonly policy: Pick<Policy, "admit" | "telemetry">;
  readonly propagator: TextMapPropagator;
  /** Largest request body taken, as Connect's `readMaxBytes`. */
  readonly maxRequestBytes: number;
  /** For `https://` nodes: the mesh's CA, and this node's certificate. */
  readonly tls?: ChannelTls;
  /** This node's own token, sent for a caller without an `authorization` of its own. */
  readonly meshToken?: string;
}

export interface Relay {
  /** Takes the call (true), or leaves it to Connect (false) having touched nothing. */
  readonly handle: (...args: Parameters<Handler>) => boolean;
  /** Ends the server streams being relayed (UNAVAILABLE), as the node's own streams end on shutdown. */
  readonly endStreams: () => void;
  /** Ends every call still relayed and closes the connections to other nodes. */
  readonly close: () => void;
}

/** Connection-specific headers (RFC 9113 §8.2.2) stay on their hop. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "host",
  "http2-settings",
]);
/** Request headers the relay sets itself. */
const REPLACED = new Set([
  FORWARDED_PRINCIPAL,
  "traceparent",
  "tracestate",
  "grpc-timeout",
  "connect-timeout-ms",
]);
/** What a gRPC trailers-only response carries in its headers: the relay sends it as trailers. */
const STATUS_HEADERS = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

interface Kind {
  readonly protocol: Protocol;
  /** The body is enveloped messages (everything but Connect unary). */
  readonly framed: boolean;
}

const kindOf = (req: Parameters<Handler>[0]): Kind | undefined => {
  const type = req.headers["content-type"] ?? "";
  if (parseGrpcType(type) !== undefined)
    return req.httpVersionMajor === 2 ? { protocol: "grpc", framed: true } : undefined;
  const web = parseGrpcWebType(type);
  if (web !== undefined) return web.text ? undefined : { protocol: "grpc-web", framed: true };
  if (req.method === "GET") return { protocol: "connect", framed: false };
  const connect = parseConnectType(type);
  return connect === undefined ? undefined : { protocol: "connect", framed: connect.stream };
};

const headerGetter: TextMapGetter<http.IncomingHttpHeaders> = {
  keys: (headers) => Object.keys(headers),
  get: (headers, key) => headers[key],
};

const envelope = (flags: number, data: Uint8Array) => {
  const frame = Buffer.alloc(5 + data.length);
  frame[0] = flags;
  frame.writeUInt32BE(data.length, 1);
  frame.set(data, 5);
  return frame;
};

interface Scan {
  readonly push: (chunk: Buffer) => void;
  /** No envelope is begun and unfinished: the body so far is whole messages. */
  readonly between: () => boolean;
}

/**
 * Follows the envelopes of a framed body as it passes and hands `found` the
 * data of the envelope whose flags have `flag` (the end of a gRPC-Web or
 * Connect stream, where its status is; 0 finds none).
 */
const scanFor = (flag: number, found: (data: Buffer, compressed: boolean) => void): Scan => {
  let head = Buffer.alloc(0);
  let flags = 0;
  let left = 0;
  let kept: Buffer[] | undefined;
  const push = (chunk: Buffer) => {
    let at = 0;
    while (at < chunk.length) {
      if (left === 0 && kept === undefined) {
        if (head.length === 0 && chunk.length - at >= 5) {
          flags = chunk[at] as number;
          left = chunk.readUInt32BE(at + 1);
          at += 5;
        } else {
          const part = chunk.subarray(at, at + 5 - head.length);
          head = Buffer.concat([head, part]);
          at += part.length;
          if (head.length < 5) return;
          flags = head[0] as number;
          left = head.readUInt32BE(1);
          head = Buffer.alloc(0);
        }
        if ((flags & flag) === 0) continue;
        if (left === 0) {
          found(Buffer.alloc(0), false);
          continue;
        }
        kept = [];
      }
      const part = chunk.subarray(at, at + left);
      kept?.push(part);
      at += part.length;
      left -= part.length;
      if (left === 0 && kept !== undefined) {
        found(Buffer.concat(kept), (flags & 1) === 1);
        kept = undefined;
      }
    }
  };
  return { push, between: () => head.length === 0 && left === 0 && kept === undefined };
};

/** The status fields of a gRPC response's trailers (or trailers-only headers). */
const statusFields = (fields: http2.IncomingHttpHeaders) => {
  const headers = new Headers();
  for (const name of STATUS_HEADERS) {
    const value = fields[name];
    if (typeof value === "string") headers.set(name, value);
  }
  return headers;
};

/** The status code (and message) of a call from its status fields. */
const statusOf = (fields: Headers): { code: number; message?: string } => {
  if (!fields.has("grpc-status")) return { code: Code.Unknown, message: "no grpc-status" };
  const error = findTrailerError(fields);
  return error === undefined ? { code: OK } : { code: error.code, message: error.rawMessage };
};

/** The error in the caller's protocol, for a call the relay ends itself. */
const writeError = (res: Parameters<Handler>[1], kind: Kind, type: string, error: ConnectError) => {
  if (kind.protocol === "connect" && !kind.framed) {
    writeHead(res, codeToHttpStatus(error.code), { "content-type": "application/json" });
    res.end(errorToJsonBytes(error, undefined));
    return;
  }
  writeHead(res, 200, { "content-type": type });
  endWithError(res, kind, error);
};

/** Ends a framed answer, begun or not, with the error as its status. */
const endWithError = (res: Parameters<Handler>[1], kind: Kind, error: ConnectError) => {
  if (kind.protocol === "grpc") {
    res.addTrailers(Object.fromEntries(setTrailerStatus(new Headers(), error)));
    res.end();
  } else if (kind.protocol === "grpc-web") {
    res.end(envelope(trailerFlag, trailerSerialize(setTrailerStatus(new Headers(), error))));
  } else {
    const end = endStreamToJson(new Headers(), error, undefined);
    res.end(envelope(endStreamFlag, Buffer.from(JSON.stringify(end))));
  }
};

const pass = (headers: http2.IncomingHttpHeaders, drop: ReadonlySet<string>) => {
  const out: http2.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(":") || HOP_BY_HOP.has(name) || drop.has(name)) continue;
    // HTTP/2 allows no `te` but "trailers" (an HTTP/1.1 caller may send others).
    if (name === "te" && value !== "trailers") continue;
    out[name] = value;
  }
  return out;
};
const NOTHING = new Set<string>();

export const makeRelay = (options: RelayOptions): Relay => {
  const methods = new Map<string, DescMethod>();
  // The relay reads a request whole before it forwards it: calls that stream requests go
  // through Connect and the forwarded port (the typed client streams them).
  for (const service of options.services)
    for (const method of service.methods)
      if (method.methodKind === "unary" || method.methodKind === "server_streaming")
        methods.set(`/${service.typeName}/${method.name}`, method);

  const sessions = new Map<string, http2.ClientHttp2Session>();
  const connected = new WeakSet<http2.ClientHttp2Session>();
  const sessionFor = (url: string) => {
    const open = sessions.get(url);
    if (open !== undefined && !open.closed && !open.destroyed) return open;
    const session = http2.connect(url, {
      ...options.tls,
      settings: { initialWindowSize: STREAM_WINDOW },
    });
    // Its streams fail with it, and each call handles its own stream.
    session.on("error", () => {});
    session.once("connect", () => {
      connected.add(session);
      session.setLocalWindowSize(SESSION_WINDOW);
    });
    session.once("close", () => {
      if (sessions.get(url) === session) sessions.delete(url);
    });
    session.unref();
    sessions.set(url, session);
    return session;
  };

  /** Calls in flight, each with what ends it when the node shuts down. */
  const active = new Map<() => void, boolean>();

  const handle: Relay["handle"] = (req, res) => {
    const path = req.url ?? "";
    const query = path.indexOf("?");
    const method = methods.get(query < 0 ? path : path.slice(0, query));
    if (method === undefined) return false;
    const kind = kindOf(req);
    if (kind === undefined) return false;
    const timeout =
      kind.protocol === "connect"
        ? parseConnectTimeout(
            (req.headers["connect-timeout-ms"] as string | undefined) ?? null,
            Number.MAX_SAFE_INTEGER,
          )
        : parseGrpcTimeout(
            (req.headers["grpc-timeout"] as string | undefined) ?? null,
            Number.MAX_SAFE_INTEGER,
          );
    if (timeout.error !== undefined) return false;
    const service = method.parent.typeName;
    const first = options.route.next(service);
    if (first === undefined) return false;
    let admission: Admission;
    try {
      admission = options.policy.admit({
        method,
        header: (name) => {
          const value = req.headers[name];
          return value === undefined ? null : Array.isArray(value) ? value.join(", ") : value;
        },
        certificate: clientCertificateName(req.socket),
        peer: peerName(req.socket),
      });
    } catch {
      // Refused: Connect answers the call, with the same refusal in the caller's protocol.
      return false;
    }
    const { principal, release } = admission;
    relay(req, res, method, kind, first, timeout.timeoutMs, principal, release);
    return true;
  };

  const relay = (
    req: Parameters<Handler>[0],
    res: Parameters<Handler>[1],
    method: DescMethod,
    kind: Kind,
    first: string,
    timeoutMs: number | undefined,
    principal: string | undefined,
    release: (() => void) | undefined,
  ) => {
    const service = method.parent.typeName;
    const type = req.headers["content-type"] ?? "";
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    const retryable = isRetryable(method);
    const observed = options.policy.telemetry.start(
      service,
      method.name,
      kind.protocol,
      req.headers,
      headerGetter,
    );

    const base = pass(req.headers, REPLACED);
    base[":method"] = req.method ?? "POST";
    base[":path"] = req.url ?? "/";
    if (base.authorization === undefined) {
      if (options.meshToken !== undefined) base.authorization = `Bearer ${options.meshToken}`;
      if (principal !== undefined) base[FORWARDED_PRINCIPAL] = principal;
    }
    options.propagator.inject(trace.setSpan(ROOT_CONTEXT, observed.span), base, {
      set: (carrier, key, value) => {
        carrier[key] = value;
      },
    });

    let target = first;
    let upstream: http2.ClientHttp2Stream | undefined;
    let responded = false;
    let finished = false;
    /** How the call ended: reported once the answer is out (see rpc.ts), on `close` below. */
    let outcome: { code: number; message: string | undefined } | undefined;
    let retryTimer: NodeJS.Timeout | undefined;
    let deadlineTimer: NodeJS.Timeout | undefined;

    const finish = (code: number, message?: string) => {
      if (finished) return;
      finished = true;
      clearTimeout(retryTimer);
      clearTimeout(deadlineTimer);
      active.delete(shutdown);
      release?.();
      outcome = { code, message };
    };
    /** Ends the call here: the error in the caller's protocol, or a reset if the answer began. */
    const fail = (error: ConnectError) => {
      upstream?.close(http2.constants.NGHTTP2_CANCEL);
      if (res.headersSent) abortInbound();
      else if (!res.writableEnded) writeError(res, kind, type, error);
      finish(error.code, error.rawMessage);
    };
    const abortInbound = () => {
      if ("stream" in res) {
        // Closing with an error code makes the stream emit it: it is the point here, not news.
        res.stream.on("error", () => {});
        res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      } else res.destroy();
    };
    const shutdown = () =>
      fail(meshErrorToConnect(new Unavailable({ message: "the mesh node is shutting down" })));
    active.set(shutdown, method.methodKind === "server_streaming");

    if (deadline !== undefined) {
      deadlineTimer = setTimeout(
        () =>
          fail(
            meshErrorToConnect(
              new DeadlineExceeded({
                message: `deadline passed relaying ${service}/${method.name}`,
              }),
            ),
          ),
        Math.max(0, deadline - Date.now()),
      );
    }
    // The caller went away (or the answer is complete): nothing more goes downstream, and the
    // span's work no longer stands in front of the answer.
    res.once("close", () => {
      if (!finished) {
        upstream?.close(http2.constants.NGHTTP2_CANCEL);
        finish(Code.Canceled, "the client cancelled the call");
      }
      observed.span.setAttribute("fo.forwarded_to", target);
      observed.finish(outcome?.code ?? Code.Canceled, outcome?.message);
    });

    const send = (body: Buffer, attempt: number) => {
      if (finished) return;
      const headers = { ...base };
      if (deadline !== undefined) {
        // Whole milliseconds; gRPC allows 8 digits, beyond that whole seconds.
        const left = Math.max(1, Math.floor(deadline - Date.now()));
        if (kind.protocol === "connect") headers["connect-timeout-ms"] = String(left);
        else headers["grpc-timeout"] = left < 1e8 ? `${left}m` : `${Math.floor(left / 1000)}S`;
      }
      const session = sessionFor(target);
      let stream: http2.ClientHttp2Stream;
      try {
        stream = session.request(headers, { endStream: body.length === 0 });
      } catch {
        return unreachable(body, attempt, false);
      }
      upstream = stream;
      if (body.length > 0) stream.end(body);
      stream.on("error", () => {});
      stream.once("response", (head, flags) => {
        responded = true;
        answer(
          stream,
          head,
          (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0,
          body,
          attempt,
        );
      });
      stream.once("close", () => {
        if (responded || finished) return;
        // Never sent, or refused before the node began it: no node did any of the work.
        const reached =
          connected.has(session) &&
          stream.id !== undefined &&
          stream.rstCode !== http2.constants.NGHTTP2_REFUSED_STREAM;
        unreachable(body, attempt, reached);
      });
    };

    /** The node failed before answering: the next one, if that is safe, else UNAVAILABLE. */
    const unreachable = (body: Buffer, attempt: number, reached: boolean) => {
      options.route.down(target);
      const next = options.route.next(service);
      // The client's backoff: doubling from the first wait, jittered as Effect's Schedule.jittered.
      const wait = RETRY_BACKOFF.firstMs * 2 ** attempt * (0.8 + 0.4 * Math.random());
      if (
        (reached && !retryable) ||
        attempt >= RETRY_BACKOFF.retries ||
        next === undefined ||
        (deadline !== undefined && Date.now() + wait >= deadline)
      ) {
        fail(
          meshErrorToConnect(
            new Unavailable({
              message: `the node hosting ${service} at ${target} cannot be reached`,
              metadata: { node: target },
            }),
          ),
        );
        return;
      }
      target = next;
      retryTimer = setTimeout(() => send(body, attempt + 1), wait);
    };

    const answer = (
      stream: http2.ClientHttp2Stream,
      head: http2.IncomingHttpHeaders,
      ended: boolean,
      body: Buffer,
      attempt: number,
    ) => {
      const status = Number(head[":status"] ?? 200);
      let code: number = OK;
      let message: string | undefined;
      const headers = pass(head, NOTHING);
      const trailersOnly = kind.protocol === "grpc" && ended;
      if (trailersOnly) for (const name of STATUS_HEADERS) delete headers[name];
      if (kind.protocol !== "connect" && head["grpc-status"] !== undefined)
        ({ code, message } = statusOf(statusFields(head)));
      else if (kind.protocol === "connect" && status !== 200) code = codeFromHttpStatus(status);
      // A unary answer begins with the first of its body or end: a node lost before that leaves
      // the call as if it had failed before answering. A stream's headers go at once (its first
      // message may be long in coming, and a caller may wait on them).
      let begun = false;
      const begin = () => {
        if (begun) return;
        begun = true;
        writeHead(res, status, headers);
        if (trailersOnly) res.addTrailers(Object.fromEntries(statusFields(head)));
      };
      if (method.methodKind !== "unary") begin();

      let scan: Scan | undefined;
      const errorBody: Buffer[] = [];
      if (kind.protocol === "grpc-web" && head["grpc-status"] === undefined) {
        scan = scanFor(trailerFlag, (data) => {
          ({ code, message } = statusOf(trailerParse(data)));
        });
      } else if (kind.protocol === "connect" && kind.framed) {
        scan = scanFor(endStreamFlag, (data, compressed) => {
          try {
            const { error } = endStreamFromJson(compressed ? gunzipSync(data) : data);
            if (error !== undefined) {
              code = error.code;
              message = error.rawMessage;
            }
          } catch {
            code = Code.Unknown;
          }
        });
      } else if (kind.protocol === "grpc") {
        scan = scanFor(0, () => {});
      } else if (kind.protocol === "connect" && status !== 200) {
        scan = { push: (chunk) => errorBody.push(chunk), between: () => false };
      }
      stream.on("data", (chunk: Buffer) => {
        begin();
        scan?.push(chunk);
        if (!(res as NodeJS.WritableStream).write(chunk)) {
          stream.pause();
          res.once("drain", () => stream.resume());
        }
      });
      stream.once("trailers", (trailers) => {
        begin();
        if (kind.protocol === "grpc") ({ code, message } = statusOf(statusFields(trailers)));
        res.addTrailers(pass(trailers, NOTHING));
      });
      stream.once("end", () => {
        begin();
        if (errorBody.length > 0) {
          const error = errorFromJsonBytes(
            Buffer.concat(errorBody),
            undefined,
            new ConnectError("", codeFromHttpStatus(status)),
          );
          code = error.code;
          message = error.rawMessage;
        }
        res.end();
        finish(code, message);
      });
      stream.once("close", () => {
        if (finished || stream.readableEnded) return;
        if (!begun) return unreachable(body, attempt, true);
        // Cut between two messages: the caller gets the status (its stream can resume from
        // there); inside one, its stream is cut the same way.
        const lost = "the node went away during the call";
        if (kind.framed && scan?.between() && !res.writableEnded)
          endWithError(res, kind, meshErrorToConnect(new Unavailable({ message: lost })));
        else abortInbound();
        finish(Code.Unavailable, lost);
      });
    };

    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      // One message and its envelope.
      if (size > options.maxRequestBytes + 5) {
        if (!finished)
          fail(
            new ConnectError(
              `message larger than the limit of ${options.maxRequestBytes} bytes`,
              Code.ResourceExhausted,
            ),
          );
        return;
      }
      chunks.push(chunk);
    });
    req.once("end", () => send(Buffer.concat(chunks), 0));
  };

  return {
    handle,
    endStreams: () => {
      for (const [end, streaming] of [...active]) if (streaming) end();
    },
    close: () => {
      for (const end of [...active.keys()]) end();
      for (const session of sessions.values()) session.close();
      sessions.clear();
    },
  };
};
