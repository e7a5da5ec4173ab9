/**
 * The policy every call meets, whichever path carries it: connect-node
 * (Connect, gRPC-Web and gRPC on the one port), the native gRPC server
 * (grpc-native.ts) and the relay (relay.ts). Who the caller is (auth.ts),
 * whether it is within its fair share (limits.ts), and how the call is
 * traced and measured (telemetry/rpc.ts) are decided here once; each path
 * only says where its headers, certificate and peer come from.
 */

import type { DescMethod } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { peerKey } from "../common/caller.js";
import type { TelemetryShape } from "../telemetry/pipeline.js";
import { type RpcTelemetry, rpcTelemetry } from "../telemetry/rpc.js";
import { type AuthOptions, authenticator, certificateKey, principalKey } from "./auth.js";
import { onEnd } from "./interceptors.js";
import { type LimitOptions, makeLimits } from "./limits.js";

/** What the transport knows of a call before its handler runs. */
export interface CallFacts {
  readonly method: DescMethod;
  /** A request header by name (lower case), or null. */
  readonly header: (name: string) => string | null;
  /** Subject CN of the verified client certificate, when the connection is mTLS. */
  readonly certificate: string | undefined;
  /** The connection's remote `address:port`: the client when there is no principal. */
  readonly peer: string;
}

export interface Admission {
  /** The authenticated principal; undefined without authentication. */
  readonly principal: string | undefined;
  /** Gives back the stream place a streaming call holds; call once when it is over. */
  readonly release: (() => void) | undefined;
}

export interface Policy {
  /**
   * Authenticates the caller and admits the call to its fair share, or
   * throws the UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED
   * ConnectError it is refused with.
   */
  readonly admit: (call: CallFacts) => Admission;
  /** Spans and metrics of every call. */
  readonly telemetry: RpcTelemetry;
  /** The same policy as connect-node interceptors, outermost first: telemetry, admission. */
  readonly interceptors: ReadonlyArray<Interceptor>;
}

/** A call that holds a stream place while it is open (limits.ts). */
const isStreaming = (method: DescMethod) =>
  method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming";

export const makePolicy = (options: {
  /** Undefined: no authentication (every caller is its connection). */
  readonly auth: AuthOptions | undefined;
  readonly limits: LimitOptions;
  readonly telemetry: TelemetryShape;
}): Policy => {
  const authenticate = options.auth && authenticator(options.auth);
  const limits = makeLimits(options.limits);
  const telemetry = rpcTelemetry(options.telemetry);

  const admit = ({ method, header, certificate, peer }: CallFacts): Admission => {
    const service = method.parent.typeName;
    const principal = authenticate?.(service, method.name, header, certificate);
    return {
      principal,
      release: limits.admit(service, isStreaming(method), principal ?? peer),
    };
  };

  const admission: Interceptor = (next) => (req) => {
    const { principal, release } = admit({
      method: req.method,
      header: (name) => req.header.get(name),
      certificate: req.contextValues.get(certificateKey),
      peer: req.contextValues.get(peerKey),
    });
    req.contextValues.set(principalKey, principal);
    return release === undefined ? next(req) : onEnd(() => next(req), release);
  };

  return { admit, telemetry, interceptors: [telemetry.interceptor, admission] };
};
