/**
 * Tracing cost: Health/Check over gRPC through two meshes, one tracing every
 * call (100 % sampling, batch span processor, OTLP/HTTP to a sink in the
 * bench process that accepts and drops everything) and one with tracing off
 * (`always_off` sampler, no exporter). h2load for throughput; the latency
 * phase, at half the untraced mesh's throughput, loads both meshes at once
 * from one generator (`pairedGrpcLatency`), because the difference sought
 * (µs) is far below what separates rounds run one after the other. The
 * floor beside it: two bare grpc-js servers (bench/bare-grpcjs.ts), one
 * making an OTel SDK span per call, run the same way.
 */
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { comparePair, type PairGroup } from "./harness.js";
import { nativePort, startBareGrpcJs, startMesh, startOtlpSink } from "./servers.js";
import { grpcCall, grpcSide, pairedGrpcLatency } from "./tools.js";

const TOOL = "h2load / paired open loop (node:http2)";

export const tracing: PairGroup = {
  id: "tracing",
  title: "Tracing",
  infra: false,
  run: async ({ profileDir }) => {
    const sink = await startOtlpSink();
    const [traced, untraced] = await Promise.all([
      startMesh(
        {
          OTEL_EXPORTER_OTLP_ENDPOINT: sink.url,
          OTEL_TRACES_SAMPLER: "always_on",
          // Metrics and logs export rarely: what is measured is the spans.
          OTEL_METRIC_EXPORT_INTERVAL: "60000",
        },
        profileDir,
      ),
      startMesh({ OTEL_TRACES_SAMPLER: "always_off" }),
    ]);
    const [bareTraced, bare] = await Promise.all([
      startBareGrpcJs({ BARE_OTLP_ENDPOINT: sink.url }),
      startBareGrpcJs(),
    ]);
    try {
      const call = grpcCall(Health, "check", {});
      const result = await comparePair(
        "Tracing: on (100 %, OTLP) vs off",
        await grpcSide({ label: "tracing on", server: nativePort(traced), call, tool: TOOL }),
        await grpcSide({ label: "tracing off", server: nativePort(untraced), call, tool: TOOL }),
        "b",
        pairedGrpcLatency(nativePort(traced), nativePort(untraced), call),
      );
      const floor = await comparePair(
        "Floor: tracing on vs off, bare grpc-js",
        await grpcSide({ label: "bare, tracing on", server: bareTraced, call, tool: TOOL }),
        await grpcSide({ label: "bare, tracing off", server: bare, call, tool: TOOL }),
        "b",
        pairedGrpcLatency(bareTraced, bare, call),
      );
      const us = (ms: number) => Math.round(ms * 1000);
      const perRound = (r: typeof result) =>
        (r.a.rounds?.latency ?? [])
          .map((l, i) => us(l.p50 - (r.b?.rounds?.latency?.[i]?.p50 ?? Number.NaN)))
          .map((d) => `${d > 0 ? "+" : ""}${d}`)
          .join(", ");
      return [
        {
          name: "Tracing: on (100 %, OTLP) vs off",
          result,
          target: { minRatio: 0.9, maxAddedP50: 0.02 },
          note: `Health/Check over native gRPC (the grpc-js port); the traced mesh exported to a local OTLP/HTTP sink (${sink.exports().toLocaleString("en-US")} export requests received), so the cost includes encoding and sending the spans. The latency phase loaded both meshes at once, half the rate each, from one open loop in the bench process sending the call to each in turn (which one goes first swaps every round), both meshes on one core (which so carries what one mesh alone would at the rate) and the generator on the other: run one after the other, rounds of the same mesh differ by hundreds of µs here. p50 on minus off in each round: ${perRound(result)} µs.`,
        },
        {
          name: "Floor: tracing on vs off, bare grpc-js",
          result: floor,
          note: `Context, no target: what tracing every call costs at the least with the OTel SDK. bench/bare-grpcjs.ts answers Health/Check with and without one server span per call (traceparent extracted, the RPC attributes and status code, batch span processor, OTLP/HTTP protobuf to the same sink); no Effect, no metrics. Run and loaded as the pair above. p50 on minus off in each round: ${perRound(floor)} µs.`,
        },
      ];
    } finally {
      await Promise.all([traced.stop(), untraced.stop(), bareTraced.stop(), bare.stop()]);
      sink.close();
    }
  },
};
