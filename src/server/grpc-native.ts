/**
 * Native gRPC served by `@grpc/grpc-js` on a port of its own
 * (`FO_GRPC_PORT`), the fast path for gRPC clients: grpc-js costs a fraction
 * of connect-node's CPU per call. The one port keeps serving gRPC too, for
 * clients that know only it.
 *
 * It serves the same implementations as connect-node (routes.ts) under the
 * same policy (policy.ts: authentication, fair shares, telemetry) and the
 * same error table: a failure leaves with its status, its message and
 * `grpc-status-details-bin` carrying the ErrorDetail (and BadRequest), as
 * connect-node's gRPC sends it. Messages are decoded and encoded here with
 * protobuf-es, so a malformed request gets a status like any other failure.
 */
import type { SecureServerOptions } from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import {
  create,
  type DescMethod,
  fromBinary,
  isMessage,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import * as grpc from "@grpc/grpc-js";
import type { TextMapGetter } from "@opentelemetry/api";
import { authorizationKey, peerKey } from "../common/caller.js";
import { OK, rpcSpanKey } from "../telemetry/rpc.js";
import { certificateKey, principalKey } from "./auth.js";
import { onCancelKey } from "./bridge.js";
import type { Listening } from "./http.js";
import { MAX_STREAMS_PER_CONNECTION, SESSION_CLOSE_GRACE_MS } from "./http.js";
import { callError, type ReportDefect } from "./interceptors.js";
import type { Admission, Policy } from "./policy.js";
import type { ServedService } from "./served.js";

export interface NativeGrpcOptions {
  readonly services: ReadonlyArray<ServedService>;
  readonly policy: Policy;
  readonly reportDefect: ReportDefect;
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Certificate and key (and client CA for mTLS), as the one port's TLS. */
  readonly tls: SecureServerOptions | undefined;
  readonly maxRequestBytes: number;
  /** Deepest message nesting a request may have. */
  readonly recursionLimit: number;
}

const metadataGetter: TextMapGetter<grpc.Metadata> = {
  keys: (md) => Object.keys(md.getMap()),
  get: (md, key) => {
    const values = md.get(key);
    return values.length === 0 ? undefined : String(values[0]);
  },
};

/** A request header as connect-node would give it; binary (`-bin`) values are not headers here. */
const headerOf = (md: grpc.Metadata) => (name: string) => {
  const values = md.get(name);
  if (values.length === 0 || typeof values[0] !== "string") return null;
  return values.join(", ");
};

const headersOf = (md: grpc.Metadata): Headers => {
  const headers = new Headers();
  for (const [key, value] of Object.entries(md.getMap()))
    if (typeof value === "string") headers.set(key, value);
  return headers;
};

/** The error as grpc-js sends it: status, message, and the details connect-node would send. */
const toStatus = (error: ConnectError): Partial<grpc.StatusObject> => {
  const metadata = new grpc.Metadata();
  const details = setTrailerStatus(new Headers(), error).get("grpc-status-details-bin");
  if (details !== null) metadata.set("grpc-status-details-bin", Buffer.from(details, "base64"));
  return { code: error.code as number as grpc.status, details: error.rawMessage, metadata };
};

const asBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);

/**
 * The HandlerContext the implementations get, built directly: connect's
 * createHandlerContext adds a deadline timer and linked signals per call,
 * which grpc-js's own deadline handling makes unneeded here. What few calls
 * read is made when first read: the signal, the request headers (copied out
 * of the metadata), the URL.
 */
class NativeContext implements HandlerContext {
  readonly protocolName = "grpc";
  readonly requestMethod = "POST";
  readonly method: DescMethod;
  readonly values: ContextValues;
  readonly #metadata: grpc.Metadata;
  readonly #signal: () => AbortSignal;
  readonly #deadlineMs: number;
  #requestHeader: Headers | undefined;
  #responseHeader: Headers | undefined;
  #responseTrailer: Headers | undefined;

  constructor(
    method: DescMethod,
    metadata: grpc.Metadata,
    signal: () => AbortSignal,
    deadlineMs: number,
    values: ContextValues,
  ) {
    this.method = method;
    this.#metadata = metadata;
    this.#signal = signal;
    this.#deadlineMs = deadlineMs;
    this.values = values;
  }
  get service() {
    return this.method.parent;
  }
  get url() {
    return `/${this.method.parent.typeName}/${this.method.name}`;
  }
  get signal() {
    return this.#signal();
  }
  readonly timeoutMs = () =>
    Number.isFinite(this.#deadlineMs) ? this.#deadlineMs - Date.now() : undefined;
  get requestHeader() {
    this.#requestHeader ??= headersOf(this.#metadata);
    return this.#requestHeader;
  }
  // Not sent on this path: no implementation sets them.
  get responseHeader() {
    this.#responseHeader ??= new Headers();
    return this.#responseHeader;
  }
  get responseTrailer() {
    this.#responseTrailer ??= new Headers();
    return this.#responseTrailer;
  }
}

type Call = grpc.ServerUnaryCall<Buffer, Buffer> & grpc.ServerWritableStream<Buffer, Buffer>;

/** Calls whose handler has not finished, and a wait for there to be none. */
const inFlight = () => {
  let n = 0;
  let waiting: Array<() => void> = [];
  return {
    begin: () => {
      n++;
    },
    end: () => {
      n--;
      if (n > 0) return;
      for (const resolve of waiting) resolve();
      waiting = [];
    },
    idle: () =>
      new Promise<void>((resolve) => {
        if (n === 0) resolve();
        else waiting.push(resolve);
      }),
  };
};

/** Resolves once the stream takes writes again, or the call is over; leaves no listener behind. */
const drainedOrAborted = (stream: NodeJS.EventEmitter, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      stream.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    stream.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });

/**
 * Runs functions after the answers queued so far: the spans' and metrics'
 * work does not stand in front of the bytes. One immediate for all the calls
 * that end in a turn of the event loop, not one each.
 */
const afterAnswers = (() => {
  let queue: Array<() => void> = [];
  const drain = () => {
    const run = queue;
    queue = [];
    for (const f of run) f();
  };
  return (f: () => void) => {
    if (queue.push(f) === 1) setImmediate(drain);
  };
})();

export const serveNativeGrpc = async (options: NativeGrpcOptions): Promise<Listening> => {
  const { policy, reportDefect } = options;
  const readOptions = { readUnknownFields: true, recursionLimit: options.recursionLimit };
  const calls = inFlight();
  const secure = options.tls !== undefined;

  /** Everything a call needs before its handler runs; undefined when the policy refused it. */
  const begin = (
    method: DescMethod,
    call: Omit<Call, "request" | "write" | "end">,
    fail: (error: ConnectError, finish: (error: ConnectError) => void) => void,
  ) => {
    const info = { service: method.parent, method };
    const observed = policy.telemetry.start(
      method.parent.typeName,
      method.name,
      "grpc",
      call.metadata,
      metadataGetter,
    );
    const certificate = secure ? certificateName(call) : undefined;
    const peer = call.getPeer();
    const header = headerOf(call.metadata);
    let admission: Admission | undefined;
    let done = false;
    calls.begin();
    const finish = (code: number, message?: string) => {
      if (done) return;
      done = true;
      calls.end();
      admission?.release?.();
      afterAnswers(() => observed.finish(code, message));
    };
    const finishWith = (error: ConnectError) => finish(error.code, error.rawMessage);
    try {
      admission = policy.admit({ method, header, certificate, peer });
    } catch (e) {
      fail(callError(info, e, false, reportDefect), finishWith);
      return undefined;
    }
    // grpc-js ends a call whose deadline passed (DEADLINE_EXCEEDED) and reports it cancelled,
    // as when the client leaves: one signal covers both, with no timer of our own.
    const deadline = call.getDeadline();
    const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
    // Made when first asked for: a call answered at once never needs one.
    let cancelled: AbortController | undefined;
    let reason: ConnectError | undefined;
    const signal = () => {
      if (cancelled === undefined) {
        cancelled = new AbortController();
        if (reason !== undefined) cancelled.abort(reason);
      }
      return cancelled.signal;
    };
    let onCancelled: Array<() => void> = [];
    const onCancel = (f: () => void) => {
      if (reason !== undefined) {
        f();
        return () => {};
      }
      onCancelled.push(f);
      return () => {
        onCancelled = onCancelled.filter((g) => g !== f);
      };
    };
    // grpc-js reports every call cancelled once its status is out: only one not yet over was.
    call.once("cancelled", () => {
      if (done) return;
      reason =
        Date.now() >= deadlineMs
          ? new ConnectError("the deadline passed", Code.DeadlineExceeded)
          : new ConnectError("the client cancelled the call", Code.Canceled);
      cancelled?.abort(reason);
      for (const f of onCancelled) f();
      onCancelled = [];
      finishWith(reason);
    });
    const ctx = new NativeContext(
      method,
      call.metadata,
      signal,
      deadlineMs,
      createContextValues()
        .set(peerKey, peer)
        .set(certificateKey, certificate)
        .set(principalKey, admission.principal)
        .set(authorizationKey, header("authorization") ?? undefined)
        .set(rpcSpanKey, observed.span)
        .set(onCancelKey, onCancel),
    );
    /** The error a throw becomes, reported and sent once. */
    const failed = (e: unknown) =>
      fail(callError(info, e, reason !== undefined, reportDefect), finishWith);
    return { ctx, finish, failed };
  };

  const decode = <M extends DescMethod>(schema: M["input"], bytes: Buffer) => {
    try {
      return fromBinary(schema, bytes, readOptions);
    } catch (e) {
      throw new ConnectError(`parse binary: ${(e as Error).message}`, Code.Internal);
    }
  };
  /**
   * A method's answers as wire bytes: the service's own encoder's when it
   * has one for the answer, else `toBinary`'s.
   */
  const encoderOf =
    (method: DescMethod, fast: ServedService["encode"]) =>
    (message: unknown): Buffer =>
      asBuffer(
        fast?.(method, message) ??
          toBinary(
            method.output,
            isMessage(message, method.output)
              ? message
              : create(method.output, message as MessageShape<typeof method.output>),
          ),
      );

  /** Writes a stream of answers with backpressure, then the status. */
  const writeAll = async (
    call: grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>,
    answers: AsyncIterable<unknown>,
    ctx: HandlerContext,
    encode: (message: unknown) => Buffer,
  ) => {
    for await (const answer of answers) {
      if (!call.write(encode(answer)) && !ctx.signal.aborted)
        await drainedOrAborted(call, ctx.signal);
    }
    call.end();
  };

  const handlerOf = (
    method: DescMethod,
    impl: (...args: never[]) => unknown,
    encode: (message: unknown) => Buffer,
  ) => {
    const run = impl as (req: unknown, ctx: HandlerContext) => unknown;
    switch (method.methodKind) {
      case "unary":
        return (call: Call, callback: grpc.sendUnaryData<Buffer>) => {
          const started = begin(method, call, (error, finish) => {
            callback(toStatus(error));
            finish(error);
          });
          if (started === undefined) return;
          const { ctx, finish, failed } = started;
          const answer = (message: unknown) => {
            callback(null, encode(message));
            finish(OK);
          };
          // An implementation that answers at once is answered in this turn, with no promise.
          try {
            const result = run(decode(method.input, call.request), ctx);
            if (result instanceof Promise) result.then(answer).catch(failed);
            else answer(result);
          } catch (e) {
            failed(e);
          }
        };
      case "server_streaming":
        return (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
          const started = begin(method, call as Call, (error, finish) => {
            call.emit("error", toStatus(error));
            finish(error);
          });
          if (started === undefined) return;
          const { ctx, finish, failed } = started;
          Promise.resolve()
            .then(() =>
              writeAll(
                call,
                run(decode(method.input, call.request), ctx) as AsyncIterable<unknown>,
                ctx,
                encode,
              ),
            )
            .then(() => finish(OK), failed);
        };
      case "bidi_streaming":
      case "client_streaming": {
        const bidi = method.methodKind === "bidi_streaming";
        return (
          call: grpc.ServerDuplexStream<Buffer, Buffer>,
          callback?: grpc.sendUnaryData<Buffer>,
        ) => {
          const started = begin(method, call as unknown as Call, (error, finish) => {
            if (callback) callback(toStatus(error));
            else call.emit("error", toStatus(error));
            finish(error);
          });
          if (started === undefined) return;
          const { ctx, finish, failed } = started;
          const requests = (async function* () {
            // Iterating a stream destroys it at the end by default: its writable side
            // still has the answers to send.
            for await (const bytes of call.iterator({ destroyOnReturn: false }))
              yield decode(method.input, bytes as Buffer);
          })();
          Promise.resolve()
            .then(async () => {
              const answer = run(requests, ctx);
              if (bidi) await writeAll(call, answer as AsyncIterable<unknown>, ctx, encode);
              else callback?.(null, encode(await answer));
            })
            .then(() => finish(OK), failed);
        };
      }
    }
  };

  const server = new grpc.Server({
    "grpc.max_receive_message_length": options.maxRequestBytes,
    "grpc.max_send_message_length": -1,
    "grpc.max_concurrent_streams": MAX_STREAMS_PER_CONNECTION,
    // Channelz counts every call for an admin service the mesh does not serve; the mesh's
    // own metrics (rpc.server.*) already count them.
    "grpc.enable_channelz": 0,
  });
  for (const { service, impl, encode: fast } of options.services) {
    const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const method of service.methods) {
      const fn = (impl as Record<string, ((...args: never[]) => unknown) | undefined>)[
        method.localName
      ];
      if (fn === undefined) continue;
      definition[method.name] = {
        path: `/${service.typeName}/${method.name}`,
        requestStream:
          method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
        responseStream:
          method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
        requestSerialize: (b: Buffer) => b,
        requestDeserialize: (b: Buffer) => b,
        responseSerialize: (b: Buffer) => b,
        responseDeserialize: (b: Buffer) => b,
        originalName: method.localName,
      };
      handlers[method.name] = handlerOf(
        method,
        fn.bind(impl),
        encoderOf(method, fast),
      ) as grpc.UntypedHandleCall;
    }
    server.addService(definition, handlers);
  }

  const credentials =
    options.tls === undefined
      ? grpc.ServerCredentials.createInsecure()
      : grpc.ServerCredentials.createSsl(
          (options.tls.ca as Buffer | undefined) ?? null,
          [{ private_key: options.tls.key as Buffer, cert_chain: options.tls.cert as Buffer }],
          options.tls.ca !== undefined,
        );
  const address = `${options.host.includes(":") ? `[${options.host}]` : options.host}:${options.port}`;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, credentials, (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );

  return {
    port,
    close: async (drainMs) => {
      // Takes no new calls (GOAWAY) and waits for the calls in flight, as the one port does.
      // A client may keep its end of a finished call or its connection open: once no call
      // is left, sessions get a short grace to close, then whatever is left is cut.
      const closed = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      const deadline = sleep(drainMs, undefined, { ref: false });
      await Promise.race([closed, deadline, calls.idle()]);
      await Promise.race([
        closed,
        deadline,
        sleep(SESSION_CLOSE_GRACE_MS, undefined, { ref: false }),
      ]);
      server.forceShutdown();
    },
  };
};

/** Subject CN of the verified client certificate (mTLS), if any. */
const certificateName = (call: Pick<Call, "getAuthContext">): string | undefined => {
  const cn = call.getAuthContext().sslPeerCertificate?.subject?.CN;
  return typeof cn === "string" && cn !== "" ? cn : undefined;
};
