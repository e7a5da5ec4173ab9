/**
 * The baseline of the transport pair: connect-node with one Health/Check
 * handler, no interceptors, no telemetry, served by node:http2 (h2c, for
 * gRPC) and by node:http (HTTP/1.1, for Connect) on two ports, with no
 * protocol sniffing in front. Run as its own process, like the mesh, so
 * neither shares an event loop with the load generator. Prints one line:
 * "listening on <h2c url>, HTTP/1.1 on <url>".
 */
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";

const handler = connectNodeAdapter({
  routes: (router) =>
    router.service(Health, {
      check: async () => ({ status: HealthCheckResponse_ServingStatus.SERVING }),
    }),
});
const h2 = http2.createServer(handler);
const h1 = http.createServer(handler);
const listen = (server: http.Server | http2.Http2Server) =>
  new Promise<string>((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`),
    ),
  );
console.log(`listening on ${await listen(h2)}, HTTP/1.1 on ${await listen(h1)}`);
process.on("SIGTERM", () => {
  h1.closeAllConnections();
  h2.close();
  h1.close();
  // A client that keeps its HTTP/2 session open must not hold the run up.
  setTimeout(() => process.exit(0), 1000).unref();
});
