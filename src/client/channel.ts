/**
 * One connection to one mesh node, over either client stack the design
 * names: `@grpc/grpc-js` (instrumented by `@opentelemetry/instrumentation-grpc`,
 * so a call continues the active trace) or connect-node (Connect protocol
 * over HTTP/2; the trace context is injected by an interceptor). Both take
 * protobuf-es messages and fail with a ConnectError carrying the node's
 * error details, so the layer above does not care which one it talks to.
 */
import { createRequire } from "node:module";
import { isIP } from "node:net";
import { checkServerIdentity } from "node:tls";
import {
  type DescMessage,
  type DescMethodBiDiStreaming,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type Transport } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type * as GrpcJs from "@grpc/grpc-js";
import { context, propagation } from "@opentelemetry/api";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { instrumentGrpc, useGlobalContext } from "./instrumentation.js";

export interface ChannelCall {
  readonly signal: AbortSignal;
  /** Time left for the call, the node's deadline for it; none for an open-ended stream. */
  readonly timeoutMs: number | undefined;
  readonly headers: Readonly<Record<string, string>>;
}

export interface Channel {
  /** The node's base URL, e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  readonly unary: <I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    input: MessageShape<I>,
    call: ChannelCall,
  ) => Promise<MessageShape<O>>;
  readonly stream: <I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    input: MessageShape<I>,
    call: ChannelCall,
  ) => AsyncIterable<MessageShape<O>>;
  /**
   * A bidirectional stream: `inputs` are sent as they come (their end
   * half-closes the call), the responses are what the iterable yields.
   * HTTP/2 only, which both stacks here speak.
   */
  readonly bidi: <I extends DescMessage, O extends DescMessage>(
    method: DescMethodBiDiStreaming<I, O>,
    inputs: AsyncIterable<MessageShape<I>>,
    call: ChannelCall,
  ) => AsyncIterable<MessageShape<O>>;
  readonly close: () => void;
}

export type ChannelKind = "grpc" | "connect";

/** For `https://` nodes: the CA to trust, and a client certificate for mTLS. PEM. */
export interface ChannelTls {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

export const openChannel = (kind: ChannelKind, url: string, tls: ChannelTls = {}): Channel =>
  kind === "grpc" ? grpcChannel(url, tls) : connectChannel(url, tls);

// --- connect-node ------------------------------------------------------------

const connectChannel = (url: string, tls: ChannelTls): Channel => {
  useGlobalContext();
  const sessions = new Http2SessionManager(url, undefined, { ...tls });
  const transport: Transport = createConnectTransport({
    baseUrl: url,
    httpVersion: "2",
    sessionManager: sessions,
    interceptors: [
      (next) => (req) => {
        propagation.inject(context.active(), req.header, {
          set: (headers, key, value) => headers.set(key, value),
        });
        return next(req);
      },
    ],
  });
  /** A streaming call; it starts when iterated, in the trace context of the caller. */
  const streamCall = <I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O> | DescMethodBiDiStreaming<I, O>,
    inputs: AsyncIterable<MessageShape<I>>,
    call: ChannelCall,
  ): AsyncIterable<MessageShape<O>> => {
    const active = context.active();
    return {
      async *[Symbol.asyncIterator]() {
        const response = await context.with(active, () =>
          transport.stream(
            method,
            call.signal,
            call.timeoutMs,
            call.headers,
            inputs,
            createContextValues(),
          ),
        );
        yield* response.message;
      },
    };
  };
  return {
    url,
    unary: async (method, input, call) =>
      (
        await transport.unary(
          method,
          call.signal,
          call.timeoutMs,
          call.headers,
          input,
          createContextValues(),
        )
      ).message,
    stream: (method, input, call) =>
      streamCall(
        method,
        (async function* () {
          yield input;
        })(),
        call,
      ),
    bidi: (method, inputs, call) => streamCall(method, stoppable(inputs), call),
    close: () => sessions.abort(),
  };
};

/**
 * The requests of a bidi call as connect-node sends them: it stops a
 * request stream with `throw` when the call ends first, which iterables
 * other than generators (an Effect Stream's) may lack.
 */
const stoppable = <A>(inputs: AsyncIterable<A>): AsyncIterable<A> => ({
  [Symbol.asyncIterator]() {
    const it = inputs[Symbol.asyncIterator]();
    const stop = async (): Promise<IteratorResult<A>> => {
      void it.return?.();
      return { done: true, value: undefined };
    };
    return { next: () => it.next(), return: stop, throw: stop };
  },
});

// --- @grpc/grpc-js -----------------------------------------------------------

const require = createRequire(import.meta.url);
let grpcLib: typeof GrpcJs | undefined;
/**
 * Loaded through `require` after the instrumentation is enabled: the
 * instrumentation patches the module when it is required, which an ESM
 * import would bypass.
 */
const grpcJs = (): typeof GrpcJs => {
  if (grpcLib === undefined) {
    instrumentGrpc();
    grpcLib = require("@grpc/grpc-js") as typeof GrpcJs;
  }
  return grpcLib;
};

const codec = <D extends DescMessage>(schema: D) => ({
  serialize: (m: MessageShape<D>) => Buffer.from(toBinary(schema, m)),
  deserialize: (b: Buffer) => fromBinary(schema, b),
});

/** grpc-message is percent-encoded on the wire; grpc-js passes it on as it came. */
const decodeMessage = (message: string) => {
  try {
    return decodeURIComponent(message);
  } catch {
    return message;
  }
};

/**
 * A stream that closed without a gRPC status (a node killed mid-call ends
 * its calls so): no answer came, as when the connection drops, which
 * grpc-go and grpcio report as UNAVAILABLE. The router may then retry the
 * call on another node, where INTERNAL would blame the server. grpc-js
 * marks the case only in its details (its status objects lose the stream's
 * RST code on the way to the callback).
 */
const endedWithoutStatus = (error: GrpcJs.ServiceError) =>
  (error.code as number) === Code.Internal &&
  error.details.startsWith("Received RST_STREAM with code 0 (Call ended without gRPC status)");

/** A grpc-js status → the ConnectError connect-node would have raised for it. */
const fromServiceError = (error: GrpcJs.ServiceError): ConnectError => {
  const err = new ConnectError(
    decodeMessage(error.details),
    endedWithoutStatus(error) ? Code.Unavailable : (error.code as number as Code),
    undefined,
    undefined,
    error,
  );
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (raw instanceof Buffer) {
    for (const any of fromBinary(StatusSchema, raw).details) {
      err.details.push({
        type: any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1),
        value: any.value,
      });
    }
  }
  return err;
};

const grpcChannel = (url: string, tls: ChannelTls): Channel => {
  const grpc = grpcJs();
  const { host, hostname, protocol } = new URL(url);
  // grpc-js sends the target host as the TLS server name, and Node 26 refuses an IP address
  // there (RFC 6066). For an IP target it sends a placeholder name instead and checks the
  // certificate against the IP itself, so verification is unchanged.
  const address = hostname.replace(/^\[|\]$/g, "");
  const ip = isIP(address) !== 0;
  const credentials =
    protocol === "https:"
      ? grpc.credentials.createSsl(
          tls.ca ?? null,
          tls.key ?? null,
          tls.cert ?? null,
          ip ? { checkServerIdentity: (_name, cert) => checkServerIdentity(address, cert) } : {},
        )
      : grpc.credentials.createInsecure();
  const client = new grpc.Client(host, credentials, {
    // The mesh's own limit decides; grpc-js would cut responses at 4 MiB.
    "grpc.max_receive_message_length": -1,
    "grpc.keepalive_time_ms": 30_000,
    ...(ip && protocol === "https:" ? { "grpc.ssl_target_name_override": "localhost" } : {}),
  });
  const path = (method: { parent: { typeName: string }; name: string }) =>
    `/${method.parent.typeName}/${method.name}`;
  const metadata = (headers: Readonly<Record<string, string>>) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(headers)) md.set(k, v);
    return md;
  };
  const deadline = (call: ChannelCall) => ({
    deadline: call.timeoutMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + call.timeoutMs,
  });

  return {
    url,
    unary: (method, input, call) =>
      new Promise((resolve, reject) => {
        const cancel = () => pending.cancel();
        const pending = client.makeUnaryRequest(
          path(method),
          codec(method.input).serialize,
          codec(method.output).deserialize,
          input,
          metadata(call.headers),
          deadline(call),
          (error, value) => {
            // A signal may outlive the call (one per caller, not per call): leave no listener on it.
            call.signal.removeEventListener("abort", cancel);
            if (error || value === undefined)
              reject(
                error ? fromServiceError(error) : new ConnectError("no response", Code.Internal),
              );
            else resolve(value);
          },
        );
        call.signal.addEventListener("abort", cancel, { once: true });
      }),
    stream: (method, input, call) => {
      // The call starts when iterated: keep the trace context of the caller.
      const active = context.active();
      return {
        async *[Symbol.asyncIterator]() {
          const pending = context.with(active, () =>
            client.makeServerStreamRequest(
              path(method),
              codec(method.input).serialize,
              codec(method.output).deserialize,
              input,
              metadata(call.headers),
              deadline(call),
            ),
          );
          const cancel = () => pending.cancel();
          call.signal.addEventListener("abort", cancel, { once: true });
          try {
            for await (const message of pending)
              yield message as MessageShape<typeof method.output>;
          } catch (error) {
            throw "code" in (error as object)
              ? fromServiceError(error as GrpcJs.ServiceError)
              : error;
          } finally {
            call.signal.removeEventListener("abort", cancel);
            pending.cancel();
          }
        },
      };
    },
    bidi: (method, inputs, call) => {
      const active = context.active();
      return {
        async *[Symbol.asyncIterator]() {
          const pending = context.with(active, () =>
            client.makeBidiStreamRequest(
              path(method),
              codec(method.input).serialize,
              codec(method.output).deserialize,
              metadata(call.headers),
              deadline(call),
            ),
          );
          const cancel = () => pending.cancel();
          call.signal.addEventListener("abort", cancel, { once: true });
          // Requests go out as they come, respecting the stream's flow control; their end
          // half-closes. A failure to send shows as the call's own error on the read side.
          const sending = (async () => {
            for await (const input of inputs) {
              if (!pending.write(input))
                await new Promise((resolve) => pending.once("drain", resolve));
            }
            pending.end();
          })().catch(() => pending.cancel());
          try {
            for await (const message of pending)
              yield message as MessageShape<typeof method.output>;
          } catch (error) {
            throw "code" in (error as object)
              ? fromServiceError(error as GrpcJs.ServiceError)
              : error;
          } finally {
            call.signal.removeEventListener("abort", cancel);
            pending.cancel();
            void sending;
          }
        },
      };
    },
    close: () => client.close(),
  };
};
