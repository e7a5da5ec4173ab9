/**
 * Every route the mesh serves, registered in one place. Service issues add
 * their `router.service(...)` lines here.
 */
import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import type { Bridge } from "./bridge.js";
import type { HealthRegistry } from "./health.js";
import { healthService } from "./health-rpc.js";
import { registerReflection } from "./reflection.js";

/** What handlers may require from the application's runtime. */
export type AppServices = HealthRegistry;

/** Services answered on the port (reflection adds itself). */
export const servedServices: ReadonlyArray<DescService> = [Health];

export const routes = (bridge: Bridge<AppServices>) => (router: ConnectRouter) => {
  router.service(Health, healthService(bridge));
  registerReflection(router, servedServices);
};
