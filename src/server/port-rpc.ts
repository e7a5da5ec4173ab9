/**
 * Serves a port through the bridge: every RPC of the service calls the port
 * method of the same name. Handlers stay free of business rules by
 * construction.
 */
import type { DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { type Context, Effect, Stream } from "effect";
import type { Bridge } from "./bridge.js";

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
    impl[name] =
      method.methodKind === "server_streaming"
        ? (req: unknown, ctx: Parameters<Bridge<I>["stream"]>[0]) =>
            bridge.stream(
              ctx,
              Stream.unwrap(Effect.map(tag, (port) => call(port, req) as Stream.Stream<never>)),
            )
        : (req: unknown, ctx: Parameters<Bridge<I>["unary"]>[0]) =>
            bridge.unary(
              ctx,
              Effect.flatMap(tag, (port) => call(port, req) as Effect.Effect<never>),
            );
  }
  return impl as ServiceImpl<S>;
};
