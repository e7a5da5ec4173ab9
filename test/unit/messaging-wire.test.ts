/**
 * The deliveries the native gRPC path writes itself (src/messaging/wire.ts)
 * are the bytes protobuf-es' `toBinary` writes for the same response, for
 * any field values (random, boundary, any UTF-16 including lone
 * surrogates), and anything the fast path does not cover is left to
 * `toBinary`.
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "@effect/vitest";
import fc from "fast-check";
import {
  ConsumeResponseSchema,
  MessageBusService,
  SubscribeResponseSchema,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import {
  type Delivery,
  DeliverySchema,
  EnvelopeSchema,
} from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { encodeDeliveries } from "../../src/messaging/wire.js";
import { int32, int64, secondsAndNanos, text } from "../support/wire-arbitraries.js";

const timestamp = secondsAndNanos(0);

const envelope = fc.record({
  messageId: text,
  messageType: text,
  kind: fc.constantFrom(0, 1, 2),
  correlationId: text,
  causationId: text,
  conversationId: text,
  source: text,
  destination: text,
  time: timestamp,
  expireTime: timestamp,
  headers: fc.dictionary(text, text, { maxKeys: 4 }),
  contentType: text,
  payload: fc.oneof(
    fc.uint8Array({ maxLength: 40 }),
    fc.uint8Array({ minLength: 120, maxLength: 300 }),
  ),
  partitionKey: text,
  replyTo: text,
  inReplyTo: text,
});

const delivery = fc
  .record({
    deliveryId: text,
    attempt: int32,
    message: fc.option(envelope, { nil: undefined }),
    topic: text,
    partition: int32,
    offset: int64,
  })
  .map(
    (d): Delivery =>
      create(DeliverySchema, {
        ...d,
        message:
          d.message === undefined
            ? undefined
            : create(EnvelopeSchema, {
                ...d.message,
                time: d.message.time && { ...d.message.time },
                expireTime: d.message.expireTime && { ...d.message.expireTime },
              } as MessageInitShape<typeof EnvelopeSchema>),
      }),
  );

const consume = MessageBusService.method.consume;
const subscribe = MessageBusService.method.subscribe;
const bytes = (b: Uint8Array | undefined) => (b === undefined ? undefined : [...b]);

describe("deliveries on the wire (native gRPC fast path)", () => {
  it("writes the bytes toBinary writes, for any batch", () => {
    fc.assert(
      fc.property(fc.array(delivery, { minLength: 1, maxLength: 5 }), (deliveries) => {
        // As the subscriptions hand them over: plain objects around Delivery messages.
        const consumed = { response: { case: "deliveries", value: { deliveries } } };
        expect(bytes(encodeDeliveries(consume, consumed))).toEqual(
          bytes(toBinary(ConsumeResponseSchema, create(ConsumeResponseSchema, consumed as never))),
        );
        const batch = { event: { case: "deliveries", value: { deliveries } } };
        expect(bytes(encodeDeliveries(subscribe, batch))).toEqual(
          bytes(toBinary(SubscribeResponseSchema, create(SubscribeResponseSchema, batch as never))),
        );
        const one = { event: { case: "delivery", value: deliveries[0] } };
        expect(bytes(encodeDeliveries(subscribe, one))).toEqual(
          bytes(toBinary(SubscribeResponseSchema, create(SubscribeResponseSchema, one as never))),
        );
      }),
      { numRuns: 300, seed: 20261206 },
    );
  });

  it("leaves other answers, and messages with unknown fields, to toBinary", () => {
    const d = create(DeliverySchema, {
      deliveryId: "d",
      message: { messageId: "m", time: timestampFromMs(1) },
    });
    const subscribed = { response: { case: "subscribed", value: { subscriptionId: "s" } } };
    expect(encodeDeliveries(consume, subscribed)).toBeUndefined();
    expect(encodeDeliveries(MessageBusService.method.ack, {})).toBeUndefined();
    const unknown = [{ no: 99, wireType: 0, data: new Uint8Array([1]) }];
    for (const odd of [
      { ...d, $unknown: unknown },
      { ...d, message: { ...d.message, $unknown: unknown } },
      { ...d, message: { ...d.message, time: { ...d.message?.time, $unknown: unknown } } },
    ]) {
      const answer = { response: { case: "deliveries", value: { deliveries: [odd] } } };
      expect(encodeDeliveries(consume, answer)).toBeUndefined();
    }
  });
});
