/**
 * Serves a port through the bridge: every RPC of the service calls the port
 * method of the same name. Handlers stay free of business rules by
 * construction.
 */
import type { DescService } from "@bufbuild/protobuf";
import { ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { type Context, Effect, Stream } from "effect";
import { InvalidArgument } from "../common/errors.js";
import type { Bridge } from "./bridge.js";

type Ctx<I> = Parameters<Bridge<I>["stream"]>[0];

/**
 * A bidi call's requests as the port sees them. A request that cannot be
 * read (a malformed message, the client reset the stream) ends them like a
 * half-close, so the port never has to tell a transport error from a
 * business one; `broke` is told, and the call then fails with it (a reset
 * client is gone anyway). Letting go of them early (the port failed, or
 * the server drains) does not wait for the client: an async generator's own
 * `return()` would wait until the client sent its next message.
 */
const requestsOf = <A>(
  requests: AsyncIterable<A>,
  broke: (error: unknown) => void,
): Stream.Stream<A> =>
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
  ).pipe(
    Stream.catchAll((e) => {
      broke(e);
      return Stream.empty;
    }),
  );

/** The error a call whose request stream broke ends with, once the port's stream is done. */
const brokenRequests = (error: unknown) =>
  new InvalidArgument({
    message: `a request could not be read: ${ConnectError.from(error).rawMessage}`,
    violations: [],
  });

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
        impl[name] = (reqs: AsyncIterable<unknown>, ctx: Ctx<I>) => {
          let broken: { error: unknown } | undefined;
          const requests = requestsOf(reqs, (error) => {
            broken = { error };
          });
          return bridge.stream(
            ctx,
            Stream.concat(
              streamOf(requests),
              Stream.suspend(() =>
                broken === undefined ? Stream.empty : Stream.fail(brokenRequests(broken.error)),
              ),
            ),
          );
        };
        break;
      default: {
        const held = bridge.service(tag);
        impl[name] = (req: unknown, ctx: Parameters<Bridge<I>["unary"]>[0]) =>
          bridge.unary(
            ctx,
            held === undefined
              ? Effect.flatMap(tag, (port) => call(port, req) as Effect.Effect<never>)
              : // A throw while building the effect is answered INTERNAL by every transport.
                (call(held, req) as Effect.Effect<never>),
          );
      }
    }
  }
  return impl as ServiceImpl<S>;
};
