/**
 * The MessageBus port: commands, events, subscriptions with acks, retries,
 * dead letters and request/reply, one method per RPC of
 * `floworchestrator.messaging.v1.MessageBusService`.
 */
import { Context } from "effect";
import type { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import type { PortOf } from "../common/port.js";

export type MessageBusShape = PortOf<typeof MessageBusService>;

export class MessageBus extends Context.Tag("fo/MessageBus")<MessageBus, MessageBusShape>() {}
