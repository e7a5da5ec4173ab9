/**
 * A node that ends a call's stream without a gRPC status (as one killed
 * mid-call does): no answer came, as when the connection drops, so the
 * grpc-js channel reports UNAVAILABLE (which its router may retry on another
 * node), not INTERNAL (a fault of the server's). The connect-node channel
 * still reports INTERNAL: it gives the case no field of its own to tell it by.
 * And a unary call leaves no listener behind on the signal it was given.
 */
import { getEventListeners, once } from "node:events";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckRequestSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { openChannel } from "../../src/client/channel.js";

let server: http2.Http2Server;
let url = "";

beforeAll(async () => {
  server = http2.createServer();
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    stream.respond({ ":status": 200, "content-type": "application/grpc" });
    // Ends the stream with no trailers: no grpc-status ever comes.
    stream.close(http2.constants.NGHTTP2_NO_ERROR);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe("grpc channel", () => {
  it("reports a call whose stream ended without a status as UNAVAILABLE", async () => {
    const channel = openChannel("grpc", url);
    try {
      const error = await channel
        .unary(Health.method.check, create(HealthCheckRequestSchema), {
          signal: new AbortController().signal,
          timeoutMs: 5_000,
          headers: {},
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code, (error as ConnectError).message).toBe(Code.Unavailable);
    } finally {
      channel.close();
    }
  });

  it("leaves no listener on a signal that outlives its calls", async () => {
    const channel = openChannel("grpc", url);
    const signal = new AbortController().signal;
    try {
      for (let i = 0; i < 3; i++)
        await channel
          .unary(Health.method.check, create(HealthCheckRequestSchema), {
            signal,
            timeoutMs: 5_000,
            headers: {},
          })
          .catch(() => {});
      expect(getEventListeners(signal, "abort")).toHaveLength(0);
    } finally {
      channel.close();
    }
  });
});
