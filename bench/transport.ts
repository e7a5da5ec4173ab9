/**
 * Transport: grpc.health.v1.Health/Check through the full mesh (the one-port
 * listener, every interceptor, the Effect bridge, telemetry) vs a bare
 * connect-node server answering the same RPC with nothing else
 * (bench/bare-server.ts), over gRPC (h2load / ghz) and over Connect on
 * HTTP/1.1 (h2load --h1 / autocannon). The latency phase runs at half the bare server's
 * throughput, as the issue defines it. Plus the floor: an HTTP/2 PING round
 * trip on loopback, which no RPC can beat.
 */
import { once } from "node:events";
import http2 from "node:http2";
import { performance } from "node:perf_hooks";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import {
  comparePair,
  type PairGroup,
  profiling,
  type Row,
  type Sample,
  settings,
  summarize,
} from "./harness.js";
import { startBare, startMesh } from "./servers.js";
import { connectSide, grpcCall, grpcSide } from "./tools.js";

const check = grpcCall(Health, "check", {});

/** Sequential PINGs on one HTTP/2 session to the bare server, timed by Node itself. */
const pingFloor = async (url: string): Promise<Row> => {
  const session = http2.connect(url);
  await once(session, "connect");
  const ping = () =>
    new Promise<number>((resolve, reject) =>
      session.ping((err, duration) => (err ? reject(err) : resolve(duration))),
    );
  for (let i = 0; i < 200; i++) await ping();
  const runs: Sample[] = [];
  for (let round = 0; round < settings.rounds; round++) {
    const latencies: number[] = [];
    const started = performance.now();
    const until = started + settings.seconds * 1000;
    while (performance.now() < until) latencies.push(await ping());
    runs.push({
      latencies,
      count: latencies.length,
      seconds: (performance.now() - started) / 1000,
      errors: 0,
    });
  }
  session.close();
  const s = summarize(runs);
  return {
    name: "Floor: HTTP/2 PING round trip",
    result: {
      a: {
        label: "node:http2 PING, one at a time",
        tool: "Node: node:http2",
        throughput: s,
        latency: s,
      },
    },
    unit: "pings/s",
    note: "Context, no target: the loopback round trip of one HTTP/2 frame each way between two Node processes, sequential (throughput is 1 / latency).",
  };
};

export const transport: PairGroup = {
  id: "transport",
  title: "Transport",
  infra: false,
  run: async (ctx) => {
    const [mesh, bare] = await Promise.all([startMesh({}, ctx.profileDir), startBare()]);
    try {
      const grpc = await comparePair(
        "Transport: Health/Check, gRPC",
        await grpcSide({ label: "mesh", server: mesh, call: check }),
        await grpcSide({ label: "bare connect-node", server: bare, call: check }),
        "b",
      );
      const connect = await comparePair(
        "Transport: Health/Check, Connect (HTTP/1.1)",
        connectSide({ label: "mesh", server: mesh, call: check }),
        connectSide({ label: "bare connect-node", server: bare, call: check }),
        "b",
      );
      const target = { minRatio: 0.85, maxAddedP50: 0.05, maxAddedP99: 0.2 };
      const rows: Row[] = [
        { name: "Transport: Health/Check, gRPC", result: grpc, target },
        { name: "Transport: Health/Check, Connect (HTTP/1.1)", result: connect, target },
      ];
      if (profiling.pair === undefined) rows.push(await pingFloor(bare.url));
      return rows;
    } finally {
      await Promise.all([mesh.stop(), bare.stop()]);
    }
  },
};
