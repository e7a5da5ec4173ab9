/**
 * Every route the mesh serves, registered in one place. Service issues add
 * their `router.service(...)` lines here.
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
import { MessageBus } from "../messaging/MessageBus.js";
import { TelemetryPort } from "../telemetry/TelemetryPort.js";
import type { Bridge } from "./bridge.js";
import type { HealthRegistry } from "./health.js";
import { healthService } from "./health-rpc.js";
import { servePort } from "./port-rpc.js";
import { registerReflection } from "./reflection.js";

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

export const routes = (bridge: Bridge<AppServices>) => (router: ConnectRouter) => {
  router.service(Health, healthService(bridge));
  router.service(DataStoreService, servePort(DataStoreService, DataStore, bridge));
  router.service(MemoryManagerService, servePort(MemoryManagerService, MemoryManager, bridge));
  router.service(MessageBusService, servePort(MessageBusService, MessageBus, bridge));
  router.service(TelemetryService, servePort(TelemetryService, TelemetryPort, bridge));
  registerReflection(router, servedServices);
};
