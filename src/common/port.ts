/**
 * The shape of a port derived from its protobuf service: one method per RPC,
 * named like the RPC, taking the request message and returning an Effect
 * (unary) or a Stream (server streaming) of the response, failing only with
 * typed MeshErrors. A bidirectional streaming RPC takes the stream of its
 * requests (it ends when the client half-closes) and returns the stream of
 * its responses. Ports know nothing of Connect; `server/port-rpc.ts`
 * serves any port whose shape this is.
 */
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { Effect, Stream } from "effect";
import type { MeshError } from "./errors.js";

type Method<M> = M extends { methodKind: "unary"; input: infer I; output: infer O }
  ? I extends DescMessage
    ? O extends DescMessage
      ? (request: MessageShape<I>) => Effect.Effect<MessageInitShape<O>, MeshError>
      : never
    : never
  : M extends { methodKind: "server_streaming"; input: infer I; output: infer O }
    ? I extends DescMessage
      ? O extends DescMessage
        ? (request: MessageShape<I>) => Stream.Stream<MessageInitShape<O>, MeshError>
        : never
      : never
    : M extends { methodKind: "bidi_streaming"; input: infer I; output: infer O }
      ? I extends DescMessage
        ? O extends DescMessage
          ? (
              requests: Stream.Stream<MessageShape<I>>,
            ) => Stream.Stream<MessageInitShape<O>, MeshError>
          : never
        : never
      : never;

export type PortOf<S extends { method: GenServiceMethods }> = {
  readonly [K in keyof S["method"]]: Method<S["method"][K]>;
};
