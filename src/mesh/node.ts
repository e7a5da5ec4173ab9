/**
 * This process as a node of the mesh: at start-up it registers itself in the
 * DataStore service registry (type `mesh-node`, its URL, the services it
 * hosts as capabilities) and walks its status to READY; it heartbeats every
 * third of its lease, registering again if the record was lost; on shutdown
 * (before the server drains) it moves to TERMINATED, so clients stop sending
 * it calls. A node that crashed simply stops heartbeating: its lease lapses
 * and the registry reports it EXPIRED.
 *
 * Registration goes through the DataStore port, local or forwarded, and
 * never holds up start-up: while the registry is unreachable it keeps trying
 * in the background.
 */
import { createRequire } from "node:module";
import { hostname } from "node:os";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Duration, Effect, Layer, Option, Schedule } from "effect";
import {
  HeartbeatRequestSchema,
  RegisterServiceRequestSchema,
  UpdateServiceStatusRequestSchema,
} from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { ServiceStatus } from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
import { MESH_NODE_TYPE } from "../client/router.js";
import { MeshConfig, type MeshConfigShape } from "../config.js";
import { DataStore } from "../datastore/DataStore.js";
import { MeshServer } from "../server/server.js";
import { hostedTypeNames } from "./services.js";

const { version } = createRequire(import.meta.url)("../../package.json") as { version: string };

/** Statuses to pass through, from a registration's current one, to reach READY. */
const toReady: Partial<Record<ServiceStatus, ReadonlyArray<ServiceStatus>>> = {
  [ServiceStatus.UNINITIALIZED]: [ServiceStatus.INITIALIZED, ServiceStatus.READY],
  [ServiceStatus.INITIALIZED]: [ServiceStatus.READY],
  [ServiceStatus.ERROR]: [ServiceStatus.INITIALIZED, ServiceStatus.READY],
};

/** While the registry cannot be reached: every second, then every 5 s. */
const joinRetry = Schedule.exponential("250 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds")),
);

/** Registering is on when the node is part of a mesh, unless FO_MESH_REGISTER says otherwise. */
export const registers = (config: MeshConfigShape) =>
  Option.getOrElse(
    config.mesh.register,
    () => config.mesh.seeds.length > 0 || hostedTypeNames(config).length < 4,
  );

export const MeshNodeLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const config = yield* MeshConfig;
    if (!registers(config)) return;
    const server = yield* MeshServer;
    const store = yield* DataStore;
    const id = {
      serviceId: Option.getOrElse(config.mesh.nodeId, () => `${hostname()}-${server.port}`),
      version,
    };
    const url = Option.getOrElse(config.mesh.advertiseUrl, () => server.url);
    const leaseMs = Duration.toMillis(config.mesh.lease);

    let registered = false;
    const join = Effect.gen(function* () {
      const { service } = yield* store.registerService(
        create(RegisterServiceRequestSchema, {
          service: {
            ...id,
            serviceType: MESH_NODE_TYPE,
            interfaceVersion: "1.0.0",
            protocol: "grpc,grpc-web,connect",
            endpoints: [url],
            capabilities: hostedTypeNames(config),
            metadata: { pid: String(process.pid), host: hostname() },
          },
          leaseDuration: durationFromMs(leaseMs),
        }),
      );
      for (const status of toReady[service?.status ?? ServiceStatus.UNSPECIFIED] ?? []) {
        yield* store.updateServiceStatus(
          create(UpdateServiceStatusRequestSchema, { ...id, status, reason: "mesh node started" }),
        );
      }
      registered = true;
      yield* Effect.logInfo(`registered as mesh node ${id.serviceId} at ${url}`);
    }).pipe(
      Effect.tapError((e) =>
        Effect.logWarning(`cannot register in the service registry: ${e.message}`),
      ),
      Effect.retry(joinRetry),
    );

    const beat = store.heartbeat(create(HeartbeatRequestSchema, id)).pipe(
      Effect.catchTags({
        // The record was removed or terminated by someone else: take the place again.
        NotFound: () => join,
        FailedPrecondition: () => join,
      }),
      Effect.catchAll((e) => Effect.logWarning(`heartbeat failed: ${e.message}`)),
    );

    yield* Effect.addFinalizer(() =>
      Effect.unless(
        store
          .updateServiceStatus(
            create(UpdateServiceStatusRequestSchema, {
              ...id,
              status: ServiceStatus.TERMINATED,
              reason: "shut down",
            }),
          )
          .pipe(
            Effect.timeout("2 seconds"),
            Effect.catchAll((e) =>
              Effect.logWarning(`cannot mark the node TERMINATED: ${String(e)}`),
            ),
          ),
        () => !registered,
      ),
    );
    yield* join.pipe(
      Effect.zipRight(Effect.repeat(beat, Schedule.spaced(Duration.millis(leaseMs / 3)))),
      Effect.forkScoped,
    );
  }),
);
