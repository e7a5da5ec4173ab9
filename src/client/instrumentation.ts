/**
 * What a client call needs from OpenTelemetry's globals to continue the
 * caller's trace: a context manager (so the active span follows async
 * work), the W3C propagator, and for grpc-js the official instrumentation.
 * An application that set up its own OpenTelemetry SDK keeps its choices:
 * the global setters do not replace what is already registered.
 */

import { context, propagation, type TracerProvider } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { GrpcInstrumentation } from "@opentelemetry/instrumentation-grpc";

let globalsSet = false;
export const useGlobalContext = () => {
  if (globalsSet) return;
  globalsSet = true;
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
};

let grpc: GrpcInstrumentation | undefined;
/** Enables the grpc-js instrumentation once per process (it patches the module). */
export const instrumentGrpc = (): GrpcInstrumentation => {
  useGlobalContext();
  grpc ??= new GrpcInstrumentation();
  return grpc;
};

/**
 * Where the grpc-js client spans go: the mesh hands in its own tracer
 * provider; otherwise the global one (an application's SDK) is used. The
 * instrumentation is one per process, so with several meshes in one process
 * (tests) the last one set wins.
 */
export const traceGrpcCallsWith = (provider: TracerProvider) =>
  instrumentGrpc().setTracerProvider(provider);
