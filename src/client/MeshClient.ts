/**
 * Typed Effect clients for the four services of a FlowOrchestrator mesh, as
 * one layer:
 *
 * ```ts
 * const program = Effect.gen(function* () {
 *   const mesh = yield* MeshClient;
 *   const { entity } = yield* mesh.datastore.getEntity({ kind: "flows", id: "f1" });
 * });
 * Effect.runPromise(program.pipe(Effect.provide(MeshClient.layer({ seeds: ["http://127.0.0.1:8080"] }))));
 * ```
 *
 * Calls go to the seeds (any node answers for every service, forwarding
 * what it does not host) until the service registry shows which nodes host
 * what; then round-robin over those (see router.ts). Errors are the tagged
 * MeshErrors of the services' ports.
 */
import type { DescService } from "@bufbuild/protobuf";
import type { GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { TracerProvider } from "@opentelemetry/api";
import { Context, Duration, Effect, Layer, Redacted, Schedule } from "effect";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { TelemetryService } from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import type { MeshError } from "../common/errors.js";
import type { ChannelKind, ChannelTls } from "./channel.js";
import { traceGrpcCallsWith } from "./instrumentation.js";
import { MESH_NODE_TYPE, makeRouter, type RegistryRouter, type RegistryWatch } from "./router.js";
import { type ClientOf, makeServiceClient } from "./service-client.js";

/**
 * Between attempts of a call that found its node UNAVAILABLE: 50 ms, then
 * doubling with jitter, four retries at most (about 0.75 s in all) — long
 * enough to reach another node, short enough to fail fast when all are down.
 * (The relay, server/relay.ts, waits the same way.)
 */
export const RETRY_BACKOFF = { firstMs: 50, retries: 4 } as const;

export const retryUnavailable: Schedule.Schedule<unknown, MeshError> = Schedule.exponential(
  Duration.millis(RETRY_BACKOFF.firstMs),
).pipe(Schedule.jittered, Schedule.intersect(Schedule.recurs(RETRY_BACKOFF.retries)));

export interface MeshClientOptions {
  /** Mesh node URLs to start from, e.g. `["http://127.0.0.1:8080"]`. */
  readonly seeds: ReadonlyArray<string>;
  /** `grpc` (@grpc/grpc-js, the default) or `connect` (connect-node, Connect protocol). */
  readonly transport?: ChannelKind;
  /** Deadline of a unary call that sets none (default 30 s). */
  readonly timeout?: Duration.DurationInput;
  /** Between retries of idempotent calls on UNAVAILABLE (default `retryUnavailable`). */
  readonly retry?: Schedule.Schedule<unknown, MeshError>;
  /** How long a node that answered UNAVAILABLE gets no calls (default 5 s). */
  readonly cooldown?: Duration.DurationInput;
  /** Follow the service registry to route to the nodes hosting each service (default true). */
  readonly discovery?: boolean;
  /** Sent as `authorization: Bearer <token>` on every call (see FO_AUTH_TOKENS_FILE). */
  readonly token?: Redacted.Redacted<string> | string;
  /** For `https://` nodes: CA to trust and a client certificate (mTLS), PEM. */
  readonly tls?: ChannelTls;
  /** Where grpc-js client spans go (default: the global tracer provider). */
  readonly tracerProvider?: TracerProvider;
  /** @internal A mesh node: its own URL, and its registry when it hosts DataStore. */
  readonly node?: { readonly url: string; readonly registry?: RegistryWatch };
}

export interface MeshClientShape {
  readonly datastore: ClientOf<typeof DataStoreService>;
  readonly memory: ClientOf<typeof MemoryManagerService>;
  readonly messaging: ClientOf<typeof MessageBusService>;
  readonly telemetry: ClientOf<typeof TelemetryService>;
  /** URLs of the live nodes hosting a service, as the registry shows them now. */
  readonly nodes: (service: DescService) => ReadonlyArray<string>;
  /** @internal The client's routing, for a node that relays calls: see server/relay.ts. */
  readonly route: Pick<RegistryRouter, "next" | "down">;
}

export const makeMeshClient = (options: MeshClientOptions) =>
  Effect.gen(function* () {
    const kind = options.transport ?? "grpc";
    if (kind === "grpc" && options.tracerProvider) traceGrpcCallsWith(options.tracerProvider);
    const router = yield* Effect.acquireRelease(
      Effect.sync(() =>
        makeRouter({
          kind,
          seeds: options.seeds,
          self: options.node?.url,
          cooldown: Duration.decode(options.cooldown ?? "5 seconds"),
          tls: options.tls,
        }),
      ),
      (r) => Effect.sync(() => r.close()),
    );
    const token =
      options.token === undefined
        ? undefined
        : Redacted.isRedacted(options.token)
          ? Redacted.value(options.token)
          : options.token;
    const settings = {
      router,
      headers:
        token === undefined ? {} : ({ authorization: `Bearer ${token}` } as Record<string, string>),
      timeout: Duration.decode(options.timeout ?? "30 seconds"),
      retry: options.retry ?? retryUnavailable,
    };
    const of = <S extends DescService & { method: GenServiceMethods }>(service: S) =>
      makeServiceClient(service, settings);
    const datastore = of(DataStoreService);
    const client: MeshClientShape = {
      datastore,
      memory: of(MemoryManagerService),
      messaging: of(MessageBusService),
      telemetry: of(TelemetryService),
      nodes: (service) => router.live(service.typeName),
      route: router,
    };
    if (options.discovery ?? true) {
      yield* router.follow(
        options.node?.registry ?? datastore.watchServices({ serviceType: MESH_NODE_TYPE }),
      );
    }
    return client;
  });

export class MeshClient extends Context.Tag("fo/MeshClient")<MeshClient, MeshClientShape>() {
  static layer = (options: MeshClientOptions) => Layer.scoped(MeshClient, makeMeshClient(options));
}
