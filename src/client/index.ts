/**
 * The FlowOrchestrator Mesh client library: typed Effect clients for the four
 * services, over @grpc/grpc-js or Connect, with deadlines, retries of
 * idempotent calls, discovery through the service registry, and the same
 * tagged errors the services use.
 */
export * from "../common/errors.js";
export type { ChannelKind } from "./channel.js";
export { type Consumer, consume } from "./consume.js";
export {
  MeshClient,
  type MeshClientOptions,
  type MeshClientShape,
  makeMeshClient,
  retryUnavailable,
} from "./MeshClient.js";
export { MESH_NODE_TYPE } from "./router.js";
export type { CallOptions, ClientOf } from "./service-client.js";
