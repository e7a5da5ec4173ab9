/**
 * Transport: grpc.health.v1.Health/Check through the full mesh (every
 * interceptor, the one-port listener, the Effect bridge) vs a bare
 * connect-node HTTP/2 server answering the same RPC with nothing else, over
 * gRPC and over Connect. Both servers run in child processes so the load
 * generator does not share their event loop.
 *
 *   npm run bench:transport            # 5 rounds of 5 s per side and protocol
 *   npm run bench:transport -- --quick # a smoke run
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { spawnMesh } from "../test/support/process.js";
import { comparePair, report } from "./harness.js";

/** The bare server: connect-node on node:http2, one handler, no interceptors. */
const BARE_SERVER = `
import http2 from "node:http2";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus as S } from "./gen/grpc/health/v1/health_pb.js";
const server = http2.createServer(connectNodeAdapter({ routes: (r) => r.service(Health, { check: async () => ({ status: S.SERVING }) }) }));
server.listen(0, "127.0.0.1", () => console.log("listening on http://127.0.0.1:" + server.address().port));
process.on("SIGTERM", () => process.exit(0));
`;

const spawnBare = async (): Promise<{ child: ChildProcess; url: string }> => {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "--input-type=module", "-e", BARE_SERVER],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const url = await new Promise<string>((resolve) =>
    child.stdout?.on("data", (d: Buffer) => {
      const m = /listening on (\S+)/.exec(d.toString());
      if (m?.[1]) resolve(m[1]);
    }),
  );
  return { child, url };
};

const mesh = await spawnMesh();
const bare = await spawnBare();
try {
  const pairs = [];
  for (const [protocol, transport] of [
    ["gRPC", (baseUrl: string) => createGrpcTransport({ baseUrl })],
    [
      "Connect (HTTP/2)",
      (baseUrl: string) => createConnectTransport({ baseUrl, httpVersion: "2" }),
    ],
  ] as const) {
    const viaMesh = createClient(Health, transport(mesh.url));
    const viaBare = createClient(Health, transport(bare.url));
    const [m, b] = await comparePair(
      () => viaMesh.check({}),
      () => viaBare.check({}),
    );
    pairs.push({
      name: `Health/Check over ${protocol}`,
      meshLabel: `mesh, ${protocol}`,
      directLabel: `bare connect-node, ${protocol}`,
      mesh: m,
      direct: b,
    });
  }
  report("transport", "Health/Check via the full mesh vs a bare connect-node server", pairs);
} finally {
  mesh.child.kill("SIGTERM");
  bare.child.kill("SIGTERM");
  await Promise.all([mesh.exited, once(bare.child, "exit")]);
}
process.exit(0);
