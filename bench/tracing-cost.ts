/**
 * What tracing adds to one call, measured in-process where a microsecond
 * shows: the mesh's RPC telemetry (`src/telemetry/rpc.ts`: the server span,
 * its end, the duration point) run in a loop on a pipeline tracing every
 * call (100 % sampling, batch span processor, OTLP/HTTP to a local sink that
 * drops it, so encoding and sending are counted) and on one tracing nothing
 * (`always_off`, no exporter), 5 rounds each, interleaved. The event loop
 * turns every 256 calls, so the exporter's timers and sends run inside the
 * measured time. The tracing pair of `npm run bench` measures the same over
 * the wire, where this difference is below the round-to-round spread.
 *
 *   npx tsx bench/tracing-cost.ts
 */
import { Layer, ManagedRuntime, Option } from "effect";
import { defaultConfig, MeshConfig } from "../src/config.js";
import { Telemetry, telemetryLayer } from "../src/telemetry/pipeline.js";
import { rpcTelemetry } from "../src/telemetry/rpc.js";
import { startOtlpSink } from "./servers.js";

const CALLS = 100_000;
const ROUNDS = 5;

const sink = await startOtlpSink();

/** A pipeline as the mesh builds it; the SDK reads its sampler from the environment. */
const pipeline = async (tracing: boolean) => {
  process.env.OTEL_TRACES_SAMPLER = tracing ? "always_on" : "always_off";
  const config = defaultConfig();
  const runtime = ManagedRuntime.make(
    telemetryLayer().pipe(
      Layer.provide(
        Layer.succeed(MeshConfig, {
          ...config,
          telemetry: {
            ...config.telemetry,
            otlpEndpoint: tracing ? Option.some(sink.url) : Option.none(),
          },
        }),
      ),
    ),
  );
  return { observe: rpcTelemetry(await runtime.runPromise(Telemetry)), runtime };
};

const headers = new Headers({ "content-type": "application/grpc" });
const getter = {
  keys: (h: Headers) => [...h.keys()],
  get: (h: Headers, key: string) => h.get(key) ?? undefined,
};

/** µs per observed call over `n` calls. */
const round = async (observe: ReturnType<typeof rpcTelemetry>, n: number) => {
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    observe.start("grpc.health.v1.Health", "Check", "grpc", headers, getter).finish(0);
    if (i % 256 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  return Number(process.hrtime.bigint() - started) / n / 1000;
};

const on = await pipeline(true);
const off = await pipeline(false);
await round(on.observe, CALLS / 2);
await round(off.observe, CALLS / 2);
const results = { on: [] as number[], off: [] as number[] };
for (let r = 0; r < ROUNDS; r++) {
  results.on.push(await round(on.observe, CALLS));
  results.off.push(await round(off.observe, CALLS));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const show = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(", ");
console.log(
  `tracing on:  ${show(results.on)} µs per call (median ${median(results.on).toFixed(1)})`,
);
console.log(
  `tracing off: ${show(results.off)} µs per call (median ${median(results.off).toFixed(1)})`,
);
console.log(
  `tracing adds ${(median(results.on) - median(results.off)).toFixed(1)} µs per call, export included (${sink.exports()} OTLP requests received)`,
);
await Promise.all([on.runtime.dispose(), off.runtime.dispose()]);
sink.close();
