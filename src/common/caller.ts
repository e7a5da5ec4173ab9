/**
 * Who is calling, as the transport knows it, for per-client limits. Ports
 * read it from a FiberRef the bridge sets per call, so they stay free of
 * transport types. Today a client is its connection (remote address and
 * port); authentication (when it comes) replaces it with the principal.
 */
import { createContextKey } from "@connectrpc/connect";
import { FiberRef } from "effect";

/** Set by the server from the request's socket. */
export const peerKey = createContextKey<string>("local", { description: "remote address:port" });

/** A connection's remote address:port, the client of a call without a principal. */
export const peerName = (socket: { remoteAddress?: string; remotePort?: number }) =>
  `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;

export const CurrentClient: FiberRef.FiberRef<string> = FiberRef.unsafeMake("local");

/**
 * When the call being served must be answered (epoch ms), if its caller set a
 * deadline. A call the mesh makes on its behalf gets no more than what is
 * left, so deadlines shrink across hops.
 */
export const CurrentDeadline: FiberRef.FiberRef<number | undefined> = FiberRef.unsafeMake<
  number | undefined
>(undefined);

/** The authenticated principal of the call being served; undefined without authentication. */
export const CurrentPrincipal: FiberRef.FiberRef<string | undefined> = FiberRef.unsafeMake<
  string | undefined
>(undefined);

/**
 * The caller's `authorization` header, passed on when the mesh forwards the
 * call to another node, so the call keeps its principal there. Never logged.
 */
export const CurrentAuthorization: FiberRef.FiberRef<string | undefined> = FiberRef.unsafeMake<
  string | undefined
>(undefined);

/**
 * The caller's `authorization` header, for a transport that has it without
 * building `Headers` (native gRPC reads it from the metadata); `null`: not
 * given here, read the call's request headers.
 */
export const authorizationKey = createContextKey<string | undefined | null>(null, {
  description: "the caller's authorization header",
});

/**
 * The header a mesh node passes its caller's principal on in when it
 * forwards a call (mTLS callers have no credential header to pass on). The
 * receiving node takes it only from its trusted forwarders (server/auth.ts).
 */
export const FORWARDED_PRINCIPAL = "fo-forwarded-principal";
