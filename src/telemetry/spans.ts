/**
 * Backend work as child spans of the call's server span: every method of a
 * storage contract (DocStore, MemoryStore, MessageLog) that returns an
 * Effect runs in an Effect span `{area}.{method}`, which the
 * `@effect/opentelemetry` tracer records through the mesh's OpenTelemetry
 * pipeline (the bridge makes the RPC's span its parent). Plain objects of
 * methods, held (`branches`) or returned (`collection("entities")`, traced
 * as `{area}.entities.{method}`), are traced the same way; streams, scoped
 * values and anything else are left as they are.
 */
import * as OtelTracing from "@effect/opentelemetry/Tracer";
import { Effect, Layer, Option, Tracer } from "effect";
import { Telemetry } from "./pipeline.js";

const isPlainObject = (value: unknown): value is object =>
  value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype;

const wrap = <T extends object>(target: T, prefix: string, attributes: Record<string, string>): T =>
  Object.fromEntries(
    Object.entries(target).map(([key, value]) => {
      const name = `${prefix}.${key}`;
      if (isPlainObject(value)) return [key, wrap(value, name, attributes)];
      if (typeof value !== "function") return [key, value];
      return [
        key,
        (...args: unknown[]) => {
          const result: unknown = value(...args);
          if (Effect.isEffect(result))
            // No stack trace per span: it costs an Error per backend call on the hot path.
            return Effect.withSpan(result, name, {
              kind: "client",
              attributes,
              captureStackTrace: false,
            });
          if (isPlainObject(result))
            return wrap(
              result,
              typeof args[0] === "string" ? `${prefix}.${args[0]}` : name,
              attributes,
            );
          return result;
        },
      ];
    }),
  ) as T;

/**
 * The store with its calls traced; as it is when no span is exported (the
 * default without an OTLP endpoint): a span per backend call costs more than
 * an in-memory store's call itself, and no one would see it.
 */
export const traceBackend = <T extends object>(
  store: T,
  area: string,
  attributes: Record<string, string>,
): Effect.Effect<T> =>
  Effect.map(Effect.serviceOption(Telemetry), (telemetry) =>
    Option.exists(telemetry, (t) => t.exportsSpans) ? wrap(store, area, attributes) : store,
  );

/**
 * Effect spans (`Effect.withSpan`, e.g. the backend calls above) are
 * recorded through the mesh's tracer, by `@effect/opentelemetry`, when spans
 * are exported. Its tracer also makes the current span OpenTelemetry's
 * active context for every step a fiber runs, a context switch per step
 * (about 3 % of a traced call's CPU); nothing here reads the active
 * context unasked (the client passes a served call's span on to the calls
 * it forwards itself: client/service-client.ts), so that part is left out.
 * When no span is exported, none of it is installed.
 */
export const effectSpans = Layer.unwrapEffect(
  Effect.map(Telemetry, ({ tracer, exportsSpans }) =>
    exportsSpans
      ? Layer.unwrapEffect(
          Effect.map(OtelTracing.make, (otel) =>
            Layer.setTracer(
              Tracer.make({ span: (...args) => otel.span(...args), context: (f) => f() }),
            ),
          ),
        ).pipe(Layer.provide(Layer.succeed(OtelTracing.OtelTracer, tracer)))
      : Layer.empty,
  ),
);
