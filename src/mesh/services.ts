/** Which protobuf services a node hosts, from `FO_SERVICES`. */
import type { DescService } from "@bufbuild/protobuf";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { TelemetryService } from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import type { HostedService, MeshConfigShape } from "../config.js";

export const serviceOf: Record<HostedService, DescService> = {
  datastore: DataStoreService,
  memory: MemoryManagerService,
  messaging: MessageBusService,
  telemetry: TelemetryService,
};

export const hostedTypeNames = (config: MeshConfigShape) =>
  config.mesh.services.map((s) => serviceOf[s].typeName);
