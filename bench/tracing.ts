/**
 * Tracing cost: Health/Check over gRPC through two meshes, one tracing every
 * call (100 % sampling, batch span processor, OTLP/HTTP to a sink in the
 * bench process that accepts and drops everything) and one with tracing off
 * (`always_off` sampler, no exporter). h2load / ghz, the latency phase at half
 * the untraced mesh's throughput.
 */
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { comparePair, type PairGroup } from "./harness.js";
import { startMesh, startOtlpSink } from "./servers.js";
import { grpcCall, grpcSide } from "./tools.js";

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
    try {
      const call = grpcCall(Health, "check", {});
      const result = await comparePair(
        "Tracing: on (100 %, OTLP) vs off",
        await grpcSide({ label: "tracing on", server: traced, call }),
        await grpcSide({ label: "tracing off", server: untraced, call }),
        "b",
      );
      return [
        {
          name: "Tracing: on (100 %, OTLP) vs off",
          result,
          target: { minRatio: 0.9, maxAddedP50: 0.02 },
          note: `Health/Check over gRPC; the traced mesh exported to a local OTLP/HTTP sink (${sink.exports().toLocaleString("en-US")} export requests received), so the cost includes encoding and sending the spans.`,
        },
      ];
    } finally {
      await Promise.all([traced.stop(), untraced.stop()]);
      sink.close();
    }
  },
};
