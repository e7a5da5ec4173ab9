/**
 * Tracing cost: grpc.health.v1.Health/Check over gRPC through two meshes,
 * one tracing every call (100 % sampling, batch span processor, OTLP/HTTP
 * to a local sink that accepts and drops everything) and one with tracing
 * off (`always_off` sampler, no exporter). Same load, interleaved rounds.
 *
 *   npm run bench:tracing            # 5 rounds of 5 s per side
 *   npm run bench:tracing -- --quick # a smoke run
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { spawnMesh } from "../test/support/process.js";
import { comparePair, report } from "./harness.js";

/** The OTLP sink: reads each export request and answers 200 with an empty body. */
let exported = 0;
const sink = createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    exported++;
    res.writeHead(200, { "content-type": "application/x-protobuf" });
    res.end();
  });
});
await new Promise<void>((resolve) => sink.listen(0, "127.0.0.1", resolve));
const endpoint = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;

const traced = await spawnMesh({
  OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
  OTEL_TRACES_SAMPLER: "always_on",
  OTEL_METRIC_EXPORT_INTERVAL: "60000",
});
const untraced = await spawnMesh({ OTEL_TRACES_SAMPLER: "always_off" });
try {
  const viaTraced = createClient(Health, createGrpcTransport({ baseUrl: traced.url }));
  const viaUntraced = createClient(Health, createGrpcTransport({ baseUrl: untraced.url }));
  const [on, off] = await comparePair(
    () => viaTraced.check({}),
    () => viaUntraced.check({}),
  );
  report("tracing", "Health/Check with tracing on (OTLP, 100 %) vs off", [
    {
      name: "Tracing",
      meshLabel: "tracing on, gRPC",
      directLabel: "tracing off, gRPC",
      mesh: on,
      direct: off,
      target: { p50AddedMs: 0.02, ratio: 0.9 },
    },
  ]);
  console.log(`OTLP export requests received by the sink: ${exported}`);
} finally {
  traced.child.kill("SIGTERM");
  untraced.child.kill("SIGTERM");
  await Promise.all([traced.exited, untraced.exited]);
  sink.close();
}
process.exit(0);
