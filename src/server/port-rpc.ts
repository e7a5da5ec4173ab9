/**
 * Serves a port through the bridge: every RPC of the service calls the port
 * method of the same name. Handlers stay free of business rules by
 * construction.
 */
import type { DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { type Context, Effect, Stream } from "effect";
import type { Bridge } from "./bridge.js";

type Ctx<I> = Parameters<Bridge<I>["stream"]>[0];

/**
 * A bidi call's requests as the port sees them. A request that cannot be
 * read (the client reset the stream, a malformed message) ends them like a
 * half-close: the call itself fails or ends through its signal, which the
 * bridge already watches, so the port never has to tell a transport error
 * from a business one. Letting go of them early (the port failed, or the
 * server drains) does not wait for the client: an async generator's own
 * `return()` would wait until the client sent its next message.
 */
const requestsOf = <A>(requests: AsyncIterable<A>): Stream.Stream<A> =>
  Stream.fromAsyncIterable(
    {
      [Symbol.asyncIterator]: () => {
        const it = requests[Symbol.asyncIterator]();
        return {
          next: () => it.next(),
          return: async (): Promise<IteratorResult<A>> => ({ done: true, value: undefined }),
        };
      },
    },
    (e) => e,
  ).pipe(Stream.catchAll(() => Stream.empty));

export const servePort = <
  S extends DescService,
  I,
  P extends Record<string, (req: never) => unknown>,
>(
  service: S,
  tag: Context.Tag<I, P>,
  bridge: Bridge<I>,
): ServiceImpl<S> => {
  const impl: Record<string, unknown> = {};
  for (const method of service.methods) {
    const name = method.localName;
    const call = (port: P, req: unknown) => (port[name] as (r: unknown) => unknown)(req);
    const streamOf = (req: unknown) =>
      Stream.unwrap(Effect.map(tag, (port) => call(port, req) as Stream.Stream<never>));
    switch (method.methodKind) {
      case "server_streaming":
        impl[name] = (req: unknown, ctx: Ctx<I>) => bridge.stream(ctx, streamOf(req));
        break;
      case "bidi_streaming":
        impl[name] = (reqs: AsyncIterable<unknown>, ctx: Ctx<I>) =>
          bridge.stream(ctx, streamOf(requestsOf(reqs)));
        break;
      default:
        impl[name] = (req: unknown, ctx: Parameters<Bridge<I>["unary"]>[0]) =>
          bridge.unary(
            ctx,
            Effect.flatMap(tag, (port) => call(port, req) as Effect.Effect<never>),
          );
    }
  }
  return impl as ServiceImpl<S>;
};
