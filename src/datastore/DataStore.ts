/**
 * The DataStore port: FlowOrchestrator's persistent store (entities, service
 * registry, configuration parameters, version records), one method per RPC
 * of `floworchestrator.datastore.v1.DataStoreService`.
 */
import { Context } from "effect";
import type { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import type { PortOf } from "../common/port.js";

export type DataStoreShape = PortOf<typeof DataStoreService>;

export class DataStore extends Context.Tag("fo/DataStore")<DataStore, DataStoreShape>() {}
