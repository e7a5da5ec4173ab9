/**
 * Batches of deliveries written straight to the protobuf wire (src/common/wire.ts),
 * for the native gRPC path: `toBinary` cost about 7 µs per 1 KiB delivery,
 * more than anything else the mesh does to hand one over.
 * test/unit/messaging-wire.test.ts holds the two to the same bytes.
 *
 * Only the responses that carry deliveries are written here, and only
 * messages without unknown fields; anything else is left to `toBinary`
 * (the caller gets `undefined`).
 */
import type { DescMethod } from "@bufbuild/protobuf";
import type { Delivery, Envelope } from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { encode, type Sink, timestamp } from "../common/wire.js";

const envelope = (s: Sink, e: Envelope) => {
  s.string(1, e.messageId);
  s.string(2, e.messageType);
  s.int32(3, e.kind);
  s.string(4, e.correlationId);
  s.string(5, e.causationId);
  s.string(6, e.conversationId);
  s.string(7, e.source);
  s.string(8, e.destination);
  timestamp(s, 9, e.time);
  timestamp(s, 10, e.expireTime);
  for (const key in e.headers) s.entry(11, key, e.headers[key] as string);
  s.string(12, e.contentType);
  s.bytes(13, e.payload);
  s.string(14, e.partitionKey);
  s.string(15, e.replyTo);
  s.string(16, e.inReplyTo);
};

const delivery = (s: Sink, d: Delivery) => {
  s.string(1, d.deliveryId);
  s.int32(2, d.attempt);
  const message = d.message;
  if (message !== undefined) s.message(3, () => envelope(s, message));
  s.string(4, d.topic);
  s.int32(5, d.partition);
  s.int64(6, d.offset);
};

/** Whether `toBinary` would write something this does not: unknown fields. */
const plain = (d: Delivery) =>
  d.$unknown === undefined &&
  (d.message === undefined ||
    (d.message.$unknown === undefined &&
      d.message.time?.$unknown === undefined &&
      d.message.expireTime?.$unknown === undefined));

/** A DeliveryBatch (`repeated Delivery deliveries = 1`) as field `field` of a response. */
const batch = (field: number, deliveries: ReadonlyArray<Delivery>): Uint8Array | undefined =>
  deliveries.every(plain)
    ? encode((s) =>
        s.message(field, () => {
          for (const d of deliveries) s.message(1, () => delivery(s, d));
        }),
      )
    : undefined;

interface Case {
  readonly case: string | undefined;
  readonly value?: unknown;
}

/**
 * The wire bytes of a MessageBus response carrying deliveries
 * (ConsumeResponse `deliveries`, SubscribeResponse `delivery` or
 * `deliveries`); undefined for any other answer.
 */
export const encodeDeliveries = (method: DescMethod, answer: unknown): Uint8Array | undefined => {
  const typeName = method.output.typeName;
  if (typeName === "floworchestrator.messaging.v1.ConsumeResponse") {
    const one = (answer as { readonly response?: Case }).response;
    if (one?.case !== "deliveries" || (answer as { $unknown?: unknown }).$unknown !== undefined)
      return undefined;
    const value = one.value as { readonly deliveries: ReadonlyArray<Delivery>; $unknown?: unknown };
    return value.$unknown === undefined ? batch(2, value.deliveries) : undefined;
  }
  if (typeName === "floworchestrator.messaging.v1.SubscribeResponse") {
    const one = (answer as { readonly event?: Case }).event;
    if ((answer as { $unknown?: unknown }).$unknown !== undefined) return undefined;
    if (one?.case === "deliveries") {
      const value = one.value as {
        readonly deliveries: ReadonlyArray<Delivery>;
        $unknown?: unknown;
      };
      return value.$unknown === undefined ? batch(3, value.deliveries) : undefined;
    }
    if (one?.case === "delivery") {
      const d = one.value as Delivery;
      return plain(d) ? encode((s) => s.message(2, () => delivery(s, d))) : undefined;
    }
  }
  return undefined;
};
