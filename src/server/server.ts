/**
 * The mesh server as a scoped Layer: acquiring it starts listening, releasing
 * it is the graceful shutdown (health NOT_SERVING, streams ended, in-flight
 * calls drained, connections closed). Layers it depends on (backends) are
 * released after it, in reverse order of acquisition.
 */
import { createContextValues } from "@connectrpc/connect";
import { Context, Duration, Effect, Layer, Option, Redacted, Runtime, RuntimeFlags } from "effect";
import { MeshClient } from "../client/MeshClient.js";
import { peerKey, peerName } from "../common/caller.js";
import { hostedServices, MeshConfig } from "../config.js";
import { serviceOf } from "../mesh/services.js";
import { Telemetry } from "../telemetry/pipeline.js";
import { responseSentKey, whenClosed } from "../telemetry/rpc.js";
import { certificateKey, loadTokens } from "./auth.js";
import { makeBridge, makeDefectReporter } from "./bridge.js";
import { consoleEndpoint } from "./console.js";
import { makeCors } from "./cors.js";
import { plainEndpoints } from "./endpoints.js";
import { serveNativeGrpc } from "./grpc-native.js";
import { HealthRegistry, OVERALL } from "./health.js";
import { type Handler, type Listening, listen, writeHead } from "./http.js";
import { errorInterceptor } from "./interceptors.js";
import { nodeAdapter } from "./node-adapter.js";
import { makePolicy } from "./policy.js";
import { makeRelay } from "./relay.js";
import { type AppServices, implementations, routes, servedServices } from "./routes.js";
import { clientCertificateName, peerTls, tlsOptions } from "./tls.js";

export interface MeshServerShape {
  /** The port actually bound (useful with `FO_PORT=0`). */
  readonly port: number;
  /** Base URL for clients, e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  /** Base URL of the native gRPC server (grpc-js, the fast path), unless it is off. */
  readonly grpcUrl: string | undefined;
}

export class MeshServer extends Context.Tag("fo/MeshServer")<MeshServer, MeshServerShape>() {}

/**
 * Between health turning NOT_SERVING and streams being ended, so Watch
 * subscribers (load balancers) see the change before their stream closes.
 */
const ANNOUNCE_DRAIN = Duration.millis(200);

/** Responses smaller than this are sent uncompressed even to clients that accept gzip. */
const COMPRESS_MIN_BYTES = 64 * 1024;

/** Deepest message nesting a request may have (protobuf-es defaults to 100). */
const MESSAGE_DEPTH_LIMIT = 200;

export const MeshServerLive = Layer.scoped(
  MeshServer,
  Effect.gen(function* () {
    const config = yield* MeshConfig;
    const health = yield* HealthRegistry;
    const telemetry = yield* Telemetry;
    // Effect counts every fiber in its global metric registry by default (started, active,
    // lifetimes, successes): four metric updates per call that nothing reads or exports.
    const runtime = Runtime.disableRuntimeFlag(
      yield* Effect.runtime<AppServices>(),
      RuntimeFlags.RuntimeMetrics,
    );
    const shutdown = new AbortController();
    const auth = {
      tokens: yield* Effect.try(() =>
        Option.getOrUndefined(Option.map(config.security.authTokensFile, loadTokens)),
      ),
      mtls: Option.isSome(config.security.tlsClientCa),
      trustedForwarders: config.security.trustedForwarders,
    };
    const authenticates = auth.tokens !== undefined || auth.mtls;
    const policy = makePolicy({
      auth: authenticates ? auth : undefined,
      limits: { rate: config.security.rateLimit, maxStreams: config.security.maxStreamsPerClient },
      telemetry,
    });
    const reportDefect = makeDefectReporter(runtime);
    const services = implementations(makeBridge(runtime, shutdown.signal));
    const connect = nodeAdapter({
      routes: routes(services),
      contextValues: (req, res) =>
        createContextValues()
          .set(peerKey, peerName(req.socket))
          .set(certificateKey, clientCertificateName(req.socket))
          .set(responseSentKey, whenClosed(res)),
      // Outermost first: telemetry sees the final status of every call, including refusals.
      interceptors: [...policy.interceptors, errorInterceptor(reportDefect)],
      readMaxBytes: config.maxRequestBytes,
      // Compressing small responses costs more CPU and latency than it saves on a mesh network.
      compressMinBytes: COMPRESS_MIN_BYTES,
      // Each JSON nesting level of a Struct is two message levels: this lets documents up to
      // the DataStore's 64-level limit reach validation (and a clear INVALID_ARGUMENT).
      binaryOptions: { recursionLimit: MESSAGE_DEPTH_LIMIT },
      jsonOptions: { recursionLimit: MESSAGE_DEPTH_LIMIT },
    });
    const cors = makeCors(config.corsOrigins);
    const plain = plainEndpoints({
      metrics: (req, res) => telemetry.prometheus.getMetricsRequestHandler(req, res),
      ready: () => Runtime.runSync(runtime)(health.check(OVERALL)),
    });
    const webConsole = yield* consoleEndpoint(config.console);
    // Services hosted elsewhere are relayed to their nodes without decoding (relay.ts).
    const relayed = hostedServices
      .filter((s) => !config.mesh.services.includes(s))
      .map((s) => serviceOf[s]);
    const client = yield* Effect.serviceOption(MeshClient);
    const tls = peerTls(config.security);
    const relay =
      Option.isNone(client) || relayed.length === 0
        ? undefined
        : yield* Effect.acquireRelease(
            Effect.sync(() =>
              makeRelay({
                services: relayed,
                route: client.value.route,
                policy,
                propagator: telemetry.propagator,
                maxRequestBytes: config.maxRequestBytes,
                ...(tls === undefined ? {} : { tls }),
                ...Option.match(config.security.meshToken, {
                  onNone: () => ({}),
                  onSome: (token) => ({ meshToken: Redacted.value(token) }),
                }),
              }),
            ),
            (r) => Effect.sync(() => r.close()),
          );
    // Relayed streams end with the node's own, when the drain begins.
    if (relay !== undefined) shutdown.signal.addEventListener("abort", relay.endStreams);
    const handler: Handler = (req, res) => {
      const decision = cors(req.method, req.headers);
      for (const [k, v] of Object.entries(decision.headers)) res.setHeader(k, v);
      if (decision.preflight !== undefined) {
        writeHead(res, decision.preflight);
        res.end();
        return;
      }
      if (req.method === "GET" && (plain(req, res) || webConsole(req, res))) return;
      if (relay?.handle(req, res)) return;
      if (connect(req, res)) return;
      writeHead(res, 404);
      res.end();
    };

    // Services whose backend check already reported keep that status.
    for (const service of servedServices) {
      if (Option.isNone(yield* health.check(service.typeName)))
        yield* health.set(service.typeName, "SERVING");
    }

    // Both servers drain together, when the one port's release begins.
    let native: Listening | undefined;
    const listening = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => listen(handler, config.host, config.port, tlsOptions(config.security)),
        catch: (e) => new Error(`cannot listen on ${config.host}:${config.port}: ${String(e)}`),
      }),
      (l) =>
        Effect.gen(function* () {
          yield* Effect.logInfo("shutting down: draining");
          yield* health.drain;
          yield* Effect.sleep(ANNOUNCE_DRAIN);
          shutdown.abort();
          yield* Effect.promise(() =>
            Promise.all([
              l.close(Duration.toMillis(config.drainTimeout)),
              native?.close(Duration.toMillis(config.drainTimeout)),
            ]),
          );
          yield* Effect.logInfo("server closed");
        }),
    );
    const grpcPort = config.grpcPort;
    native =
      grpcPort === undefined
        ? undefined
        : yield* Effect.tryPromise({
            try: () =>
              serveNativeGrpc({
                services,
                policy,
                reportDefect,
                host: config.host,
                port: grpcPort,
                tls: tlsOptions(config.security),
                maxRequestBytes: config.maxRequestBytes,
                recursionLimit: MESSAGE_DEPTH_LIMIT,
              }),
            catch: (e) =>
              new Error(`cannot serve native gRPC on ${config.host}:${grpcPort}: ${String(e)}`),
          });
    const scheme = Option.isSome(config.security.tlsCert) ? "https" : "http";
    const host = config.host.includes(":") ? `[${config.host}]` : config.host;
    return {
      port: listening.port,
      url: `${scheme}://${host}:${listening.port}`,
      grpcUrl: native && `${scheme}://${host}:${native.port}`,
    };
  }),
);
