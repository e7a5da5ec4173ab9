/** The connect-node request listener: how a call's signal ends. */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { CALL_ENDED, nodeAdapter } from "../../src/server/node-adapter.js";

const servers: http.Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A Health service whose Check fails for the service "bad"; every call's signal is kept. */
const serve = async (gate?: () => void) => {
  const signals: AbortSignal[] = [];
  const handler = nodeAdapter({
    routes: (router) =>
      router.service(Health, {
        check: (req, ctx) => {
          signals.push(ctx.signal);
          if (req.service === "bad") throw new ConnectError("no such service", Code.NotFound);
          return { status: HealthCheckResponse_ServingStatus.SERVING };
        },
      }),
    contextValues: () => createContextValues(),
    ...(gate === undefined ? {} : { requestGate: gate }),
  });
  const server = http.createServer((req, res) => {
    if (!handler(req, res)) res.writeHead(404).end();
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const check = (service: string) =>
    fetch(`http://127.0.0.1:${port}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ service }),
    });
  return { signals, check };
};

describe("nodeAdapter", () => {
  it("ends every normal call's signal with one shared reason, not a new exception", async () => {
    const { signals, check } = await serve();
    for (let i = 0; i < 3; i++) expect((await check("")).status).toBe(200);
    expect(signals).toHaveLength(3);
    for (const signal of signals) {
      expect(signal.aborted).toBe(true);
      expect(signal.reason).toBe(CALL_ENDED);
    }
    expect(CALL_ENDED.name).toBe("AbortError");
  });

  it("ends a failed call's signal with its error", async () => {
    const { signals, check } = await serve();
    const res = await check("bad");
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ code: "not_found", message: "no such service" });
    expect(signals).toHaveLength(1);
    expect(signals[0]?.reason).toMatchObject({ name: "ConnectError", code: Code.NotFound });
  });

  it("still runs a request gate it is given", async () => {
    const gate = () => {
      throw new ConnectError("not today", Code.PermissionDenied);
    };
    const { signals, check } = await serve(gate);
    const res = await check("");
    expect(res.status).toBe(403);
    expect(signals).toHaveLength(0);
  });
});
