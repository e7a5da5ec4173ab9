/**
 * One TCP port for every protocol. gRPC clients open cleartext HTTP/2 with
 * prior knowledge (h2c); browsers and curl speak HTTP/1.1. The first bytes of
 * a connection tell them apart (the HTTP/2 connection preface), and the
 * socket goes to the matching Node server, both running the same handler.
 */

import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/** Request handler shared by the HTTP/1.1 and HTTP/2 servers. */
export type Handler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/**
 * `res.writeHead` for either response type: the two types' overloads do not
 * unify into one callable signature.
 */
export const writeHead = (
  res: Parameters<Handler>[1],
  status: number,
  headers?: http.OutgoingHttpHeaders,
): void => {
  (res as http.ServerResponse).writeHead(status, headers);
};

export interface Listening {
  readonly port: number;
  /**
   * Graceful close: stop accepting connections, tell HTTP/2 clients to go
   * away (GOAWAY), wait up to `drainMs` for requests in flight, then cut
   * whatever is left so no open session keeps the process alive.
   */
  readonly close: (drainMs: number) => Promise<void>;
}

/** HTTP/2 flow-control windows: per stream, and for a whole connection. */
export const STREAM_WINDOW = 1024 * 1024;
export const SESSION_WINDOW = 16 * 1024 * 1024;

/** Concurrent HTTP/2 streams (calls) one connection may have open; more wait in the client. */
export const MAX_STREAMS_PER_CONNECTION = 1000;

/** After the last request ends, how long HTTP/2 sessions get to finish closing. */
export const SESSION_CLOSE_GRACE_MS = 500;

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

const isHttp2Preface = (chunk: Buffer): boolean => {
  const n = Math.min(chunk.length, PREFACE.length);
  return chunk.subarray(0, n).equals(PREFACE.subarray(0, n));
};

/**
 * @param tls certificate and key (and client CA): the port speaks TLS, and
 *   ALPN picks h2 or http/1.1 instead of the cleartext preface sniffing.
 */
export const listen = async (
  handler: Handler,
  host: string,
  port: number,
  tls?: http2.SecureServerOptions,
): Promise<Listening> => {
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  let inFlight = 0;
  let idle: (() => void) | undefined;

  const tracked: Handler = (req, res) => {
    inFlight++;
    res.once("close", () => {
      inFlight--;
      if (inFlight === 0) idle?.();
    });
    handler(req, res);
  };

  const h1 = http.createServer(tracked);
  // HTTP/2's default 64 KiB flow-control windows stall large requests (a batch
  // publish, a memory write) on a window update per 64 KiB: open them wider.
  // One connection may not hold more than MAX_STREAMS_PER_CONNECTION calls at once (Node's
  // default is unlimited): the per-connection share of the fair-share limits (limits.ts).
  const settings = {
    initialWindowSize: STREAM_WINDOW,
    maxConcurrentStreams: MAX_STREAMS_PER_CONNECTION,
  };
  const h2 = http2.createServer({ settings }, tracked);
  const secure =
    tls === undefined
      ? undefined
      : http2.createSecureServer({ ...tls, settings, allowHTTP1: true }, tracked);
  const trackSession = (session: http2.ServerHttp2Session) => {
    session.setLocalWindowSize(SESSION_WINDOW);
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  };
  h2.on("session", trackSession);
  secure?.on("session", trackSession);

  // No Nagle: small RPC frames must leave at once, not wait for the peer's delayed ACK.
  const tcp = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    if (secure !== undefined) {
      // The TLS server does the handshake and hands h2 or http/1.1 (by ALPN) to the handler.
      secure.emit("connection", socket);
      return;
    }
    socket.once("data", (chunk: Buffer) => {
      // Give the bytes back and hand the socket to the server that speaks them.
      socket.pause();
      socket.unshift(chunk);
      if (isHttp2Preface(chunk)) {
        // The HTTP/2 session takes the buffered bytes, then reads the socket's handle
        // itself: resuming the JS stream too would make two readers.
        h2.emit("connection", socket);
      } else {
        // The HTTP/1 server listens for "data" but leaves a paused socket paused.
        h1.emit("connection", socket);
        socket.resume();
      }
    });
  });

  tcp.listen(port, host);
  await Promise.race([once(tcp, "listening"), once(tcp, "error").then(([e]) => Promise.reject(e))]);
  const address = tcp.address() as net.AddressInfo;

  return {
    port: address.port,
    close: async (drainMs) => {
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      // GOAWAY: HTTP/2 sessions take no new streams and close once their streams are done.
      const sessionsDone = [...sessions].map(
        (session) => new Promise<void>((resolve) => session.close(resolve)),
      );
      h1.closeIdleConnections();
      const requestsDone = new Promise<void>((resolve) => {
        idle = resolve;
        if (inFlight === 0) resolve();
      });
      const deadline = sleep(drainMs, undefined, { ref: false });
      await Promise.race([requestsDone, deadline]);
      // Sessions close once their last frames are out; a peer that keeps its end open
      // gets a short grace, not the whole drain timeout.
      const grace = sleep(SESSION_CLOSE_GRACE_MS, undefined, { ref: false });
      await Promise.race([Promise.all(sessionsDone), deadline, grace]);
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
};
