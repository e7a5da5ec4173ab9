/**
 * Every service the mesh serves, registered in one place: connect-node
 * (`routes`) and the native gRPC server (grpc-native.ts) serve the same
 * implementations. Service issues add their lines to `implementations`.
 */
import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { TelemetryService } from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { DataStore } from "../datastore/DataStore.js";
import { MemoryManager } from "../memory/MemoryManager.js";
import { encodeEntries } from "../memory/wire.js";
import { MessageBus } from "../messaging/MessageBus.js";
import { encodeDeliveries } from "../messaging/wire.js";
import { TelemetryPort } from "../telemetry/TelemetryPort.js";
import type { Bridge } from "./bridge.js";
import type { HealthRegistry } from "./health.js";
import { healthService } from "./health-rpc.js";
import { servePort } from "./port-rpc.js";
import { reflectionServices } from "./reflection.js";
import { type ServedService, served } from "./served.js";

/** What handlers may require from the application's runtime. */
export type AppServices = HealthRegistry | DataStore | MemoryManager | MessageBus | TelemetryPort;

/** Services answered on the port (reflection adds itself). */
export const servedServices: ReadonlyArray<DescService> = [
  Health,
  DataStoreService,
  MemoryManagerService,
  MessageBusService,
  TelemetryService,
];

/** Every service with its implementation, reflection included. */
export const implementations = (bridge: Bridge<AppServices>): ReadonlyArray<ServedService> => [
  served(Health, healthService(bridge)),
  served(DataStoreService, servePort(DataStoreService, DataStore, bridge)),
  served(
    MemoryManagerService,
    servePort(MemoryManagerService, MemoryManager, bridge),
    encodeEntries,
  ),
  served(MessageBusService, servePort(MessageBusService, MessageBus, bridge), encodeDeliveries),
  served(TelemetryService, servePort(TelemetryService, TelemetryPort, bridge)),
  ...reflectionServices(servedServices),
];

/** The services as connect-node routes. */
export const routes = (services: ReadonlyArray<ServedService>) => (router: ConnectRouter) => {
  for (const { service, impl } of services) router.service(service, impl);
};
