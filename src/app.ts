/**
 * The application as one Layer: the server and everything it stands on. The
 * output keeps the health registry and telemetry so embedders (tests, main)
 * can report into them.
 *
 * Each service is either hosted here (its Live layer, with its backend) or,
 * when `FO_SERVICES` leaves it out, hosted elsewhere: the server relays its
 * calls to a node that hosts it (server/relay.ts), and its port is the typed
 * mesh client, which carries this node's own calls (registration, the
 * registry watch) and the calls the relay leaves to Connect.
 */
import { create } from "@bufbuild/protobuf";
import { type Context, Effect, Layer, Option, Stream } from "effect";
import {
  WatchServicesRequestSchema,
  WatchServicesResponseSchema,
} from "../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { MeshClient, type MeshClientShape, makeMeshClient } from "./client/MeshClient.js";
import { MESH_NODE_TYPE } from "./client/router.js";
import { type HostedService, hostedServices, MeshConfig, type MeshConfigShape } from "./config.js";
import { DataStore } from "./datastore/DataStore.js";
import { DataStoreLive } from "./datastore/service.js";
import { ownedByPrincipal } from "./memory/identity.js";
import { MemoryManager } from "./memory/MemoryManager.js";
import { MemoryManagerLive } from "./memory/service.js";
import { MeshNodeLive } from "./mesh/node.js";
import { serviceOf } from "./mesh/services.js";
import { MessageBus } from "./messaging/MessageBus.js";
import { MessageBusLive } from "./messaging/service.js";
import { HealthRegistry, healthFromPing } from "./server/health.js";
import { MeshServerLive } from "./server/server.js";
import { peerTls } from "./server/tls.js";
import { otelLogs } from "./telemetry/logs.js";
import { Telemetry, type TelemetryOptions, telemetryLayer } from "./telemetry/pipeline.js";
import { TelemetryServiceLive } from "./telemetry/service.js";
import { effectSpans } from "./telemetry/spans.js";
import { TelemetryPort } from "./telemetry/TelemetryPort.js";

/**
 * The client of a node's forwarded ports, whose routes the relay follows too:
 * grpc-js (so the instrumentation continues the trace), following the
 * registry of the local DataStore when hosted here.
 */
const forwardingClient = (config: MeshConfigShape) =>
  Layer.scoped(
    MeshClient,
    Effect.gen(function* () {
      const telemetry = yield* Telemetry;
      const local = yield* Effect.serviceOption(DataStore);

      return yield* makeMeshClient({
        seeds: config.mesh.seeds,
        transport: "grpc",
        // Its own calls (registration, the registry watch); forwarded calls carry their caller's.
        token: Option.getOrUndefined(config.security.meshToken),
        tls: peerTls(config.security),
        tracerProvider: telemetry.tracerProvider,
        node: {
          url: Option.getOrElse(config.mesh.advertiseUrl, () => ""),
          registry: Option.getOrUndefined(
            Option.map(local, (store) =>
              store
                .watchServices(create(WatchServicesRequestSchema, { serviceType: MESH_NODE_TYPE }))
                .pipe(Stream.map((event) => create(WatchServicesResponseSchema, event))),
            ),
          ),
        },
      });
    }),
  );

/**
 * A port served by forwarding. Its health is whether somewhere to send the
 * calls is known: a live node hosting the service, or a seed.
 */
const forwarded = <I, S>(
  config: MeshConfigShape,
  name: HostedService,
  tag: Context.Tag<I, S>,
  pick: (client: MeshClientShape) => S,
) =>
  Layer.merge(
    Layer.effect(tag, Effect.map(MeshClient, pick)),
    healthFromPing(
      serviceOf[name].typeName,
      Effect.flatMap(MeshClient, (client) =>
        client.nodes(serviceOf[name]).length > 0 || config.mesh.seeds.length > 0
          ? Effect.void
          : Effect.fail(`no live node hosts ${serviceOf[name].typeName}`),
      ),
    ),
  );

/** The four ports: hosted ones on their backends, the others forwarded. */
const portsLayer = (config: MeshConfigShape) => {
  const hosts = (s: HostedService) => config.mesh.services.includes(s);
  const ports = Layer.mergeAll(
    hosts("datastore")
      ? DataStoreLive
      : forwarded(config, "datastore", DataStore, (c) => c.datastore),
    hosts("memory")
      ? Layer.effect(MemoryManager, Effect.map(MemoryManager, ownedByPrincipal)).pipe(
          Layer.provide(MemoryManagerLive),
        )
      : forwarded(config, "memory", MemoryManager, (c) => c.memory),
    hosts("messaging")
      ? MessageBusLive
      : forwarded(config, "messaging", MessageBus, (c) => c.messaging),
    hosts("telemetry")
      ? TelemetryServiceLive
      : forwarded(config, "telemetry", TelemetryPort, (c) => c.telemetry),
  );
  type Hosted = Layer.Layer<
    Layer.Layer.Success<typeof ports>,
    Layer.Layer.Error<typeof ports>,
    Exclude<Layer.Layer.Context<typeof ports>, MeshClient>
  >;
  // Every port is hosted: nothing asks for the client (TypeScript cannot see that).
  if (config.mesh.services.length === hostedServices.length) return ports as Hosted;
  // Layers are shared by reference: the DataStore given to the client is the one served.
  const client = hosts("datastore")
    ? forwardingClient(config).pipe(Layer.provide(DataStoreLive))
    : forwardingClient(config);
  // The server relays calls for the services hosted elsewhere along the client's routes.
  return ports.pipe(Layer.provideMerge(client));
};

export const appLayer = (config: MeshConfigShape, telemetry: TelemetryOptions = {}) =>
  MeshNodeLive.pipe(
    // Acquired after the server, so released first: TERMINATED before the drain.
    Layer.provideMerge(MeshServerLive),
    Layer.provide(portsLayer(config)),
    Layer.provide(Layer.merge(otelLogs, effectSpans)),
    Layer.provideMerge(telemetryLayer(telemetry)),
    Layer.provideMerge(HealthRegistry.Default),
    Layer.provide(Layer.succeed(MeshConfig, config)),
  );
