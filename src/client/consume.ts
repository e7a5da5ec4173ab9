/**
 * Consuming messages over MessageBusService/Consume the way a worker does:
 *
 * ```ts
 * const consumer = yield* consume(mesh.messaging, { group: "imports", destination: "imports" });
 * yield* consumer.batches.pipe(
 *   Stream.runForEach((batch) =>
 *     Effect.forEach(batch, handle).pipe(
 *       Effect.zipRight(consumer.ack(...batch.map((d) => d.deliveryId))),
 *     ),
 *   ),
 * );
 * ```
 *
 * The stream lives in the caller's scope: closing it cancels the call, and
 * the mesh redelivers whatever was not acknowledged. Acks and nacks made
 * while the previous request is still being written go out together as one
 * request, so acknowledging message by message costs no more than by batch.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Chunk, Duration, Effect, Option, Queue, type Scope, Sink, Stream } from "effect";
import type {
  ConsumeNackSchema,
  ConsumeRequestSchema,
  MessageBusService,
  Subscribed,
  SubscribeRequestSchema,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import type { Delivery } from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { type MeshError, Unavailable } from "../common/errors.js";
import type { CallOptions, ClientOf } from "./service-client.js";

type Request = MessageInitShape<typeof ConsumeRequestSchema>;
type Nack = MessageInitShape<typeof ConsumeNackSchema>;

export interface Consumer {
  /** The subscription as the mesh opened it. */
  readonly subscribed: Subscribed;
  /**
   * Deliveries, in batches as the mesh sent them (at most `max_in_flight`
   * unsettled at a time: settle to get more). Fails with the call's error,
   * e.g. NotFound for an ack of an unknown delivery id.
   */
  readonly batches: Stream.Stream<ReadonlyArray<Delivery>, MeshError>;
  /** Acknowledges deliveries: done. */
  readonly ack: (...deliveryIds: ReadonlyArray<string>) => Effect.Effect<void>;
  /** Refuses a delivery: retried per the subscription's retry policy, then dead-lettered. */
  readonly nack: (
    deliveryId: string,
    options?: { readonly reason?: string; readonly delay?: Duration.DurationInput },
  ) => Effect.Effect<void>;
  /** Half-closes the call: the mesh then ends the stream, and redelivers what is unsettled. */
  readonly close: Effect.Effect<void>;
}

/**
 * One request per run of queued requests: consecutive settlements merged
 * (the mesh takes up to 1,000 ids per request).
 */
const merged = (chunk: Chunk.Chunk<Request>): Chunk.Chunk<Request> => {
  const out: Request[] = [];
  let ackIds: string[] = [];
  let nacks: Nack[] = [];
  const flush = () => {
    if (ackIds.length + nacks.length === 0) return;
    out.push({ request: { case: "settle", value: { ackIds, nacks } } });
    ackIds = [];
    nacks = [];
  };
  for (const r of chunk) {
    const request = r.request;
    if (request?.case !== "settle") {
      flush();
      out.push(r);
      continue;
    }
    const settle = request.value;
    const count = (settle.ackIds?.length ?? 0) + (settle.nacks?.length ?? 0);
    if (ackIds.length + nacks.length + count > 1000) flush();
    ackIds.push(...(settle.ackIds ?? []));
    nacks.push(...(settle.nacks ?? []));
  }
  flush();
  return Chunk.unsafeFromArray(out);
};

/**
 * Opens a Consume stream for `subscription` (the fields, defaults and limits
 * of Subscribe) and waits until the mesh says it is consuming.
 */
export const consume = (
  client: ClientOf<typeof MessageBusService>,
  subscription: MessageInitShape<typeof SubscribeRequestSchema>,
  options?: CallOptions,
): Effect.Effect<Consumer, MeshError, Scope.Scope> =>
  Effect.gen(function* () {
    const requests = yield* Queue.unbounded<Request>();
    yield* Queue.offer(requests, { request: { case: "subscribe", value: subscription } });
    const responses = client.consume(
      Stream.fromQueue(requests).pipe(Stream.mapChunks(merged)),
      options,
    );
    const [first, rest] = yield* Stream.peel(responses, Sink.head());
    const subscribed = Option.flatMap(first, (r) =>
      r.response.case === "subscribed" ? Option.some(r.response.value) : Option.none(),
    );
    if (Option.isNone(subscribed)) {
      return yield* new Unavailable({ message: "the Consume stream ended before it subscribed" });
    }
    const settle = (value: { ackIds?: string[]; nacks?: Nack[] }) =>
      Queue.offer(requests, { request: { case: "settle", value } }).pipe(Effect.asVoid);
    return {
      subscribed: subscribed.value,
      batches: rest.pipe(
        Stream.filterMap((r) =>
          r.response.case === "deliveries"
            ? Option.some<ReadonlyArray<Delivery>>(r.response.value.deliveries)
            : Option.none(),
        ),
      ),
      ack: (...deliveryIds) =>
        deliveryIds.length === 0 ? Effect.void : settle({ ackIds: [...deliveryIds] }),
      nack: (deliveryId, nackOptions) =>
        settle({
          nacks: [
            {
              deliveryId,
              reason: nackOptions?.reason ?? "",
              ...(nackOptions?.delay === undefined
                ? {}
                : { delay: durationOf(Duration.decode(nackOptions.delay)) }),
            },
          ],
        }),
      close: Queue.shutdown(requests),
    };
  });

const durationOf = (d: Duration.Duration) => {
  const ms = Duration.toMillis(d);
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: Math.round((ms % 1000) * 1e6) };
};
