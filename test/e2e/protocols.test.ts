/** Tier 2: a real server on port 0, called over every protocol it speaks. */
import { connect } from "node:net";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema } from "../../gen/floworchestrator/common/v1/error_pb.js";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.js";
import { clientFor, failureOf, protocolNames } from "../support/clients.js";
import { setHealth, startMesh, type TestMesh } from "../support/mesh.js";

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh({ maxRequestBytes: 1024 });
});
afterAll(() => mesh.close());

describe.each(protocolNames)("%s", (protocol) => {
  const health = () => clientFor(Health, protocol, mesh.url);

  it("answers Health/Check for the server and for a served service", async () => {
    expect((await health().check({})).status).toBe(Status.SERVING);
    expect((await health().check({ service: "grpc.health.v1.Health" })).status).toBe(
      Status.SERVING,
    );
  });

  it("answers an unknown service with NOT_FOUND and the FlowOrchestrator detail", async () => {
    const err = await failureOf(health().check({ service: "no.such.Service" }));
    expect(err.code).toBe(Code.NotFound);
    expect(err.findDetails(ErrorDetailSchema)[0]?.code).toBe("RESOURCE_ERROR.NOT_FOUND");
  });

  it("streams Health/Watch: the current status, then a change", async () => {
    const name = `watched.${protocol.replace(/\W/g, "")}`;
    const seen: Status[] = [];
    for await (const res of health().watch({ service: name }, { timeoutMs: 10_000 })) {
      seen.push(res.status);
      if (seen.length === 1) await setHealth(mesh, name, "SERVING");
      if (seen.length === 2) await setHealth(mesh, name, "NOT_SERVING");
      if (seen.length === 3) break;
    }
    await setHealth(mesh, name, "SERVING"); // leave the overall status SERVING for the others
    expect(seen).toEqual([Status.SERVICE_UNKNOWN, Status.SERVING, Status.NOT_SERVING]);
  });

  it("refuses a request over the size limit with RESOURCE_EXHAUSTED", async () => {
    const err = await failureOf(health().check({ service: "x".repeat(4096) }));
    expect(err.code).toBe(Code.ResourceExhausted);
    // The server is still fine afterwards.
    expect((await health().check({})).status).toBe(Status.SERVING);
  });

  it("ends a call at the client's deadline with DEADLINE_EXCEEDED", async () => {
    const err = await failureOf(
      (async () => {
        for await (const _ of health().watch({ service: "" }, { timeoutMs: 300 })) {
          // keep reading until the deadline cuts the stream
        }
      })(),
    );
    expect(err.code).toBe(Code.DeadlineExceeded);
  });
});

/** Sends `head` and a JSON body on a new connection; resolves with everything read until it closes. */
const rawExchange = (url: string, head: string, body: string) =>
  new Promise<string>((resolve, reject) => {
    const { hostname, port } = new URL(url);
    const socket = connect(Number(port), hostname, () =>
      socket.end(`${head}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`),
    );
    let text = "";
    socket.setEncoding("utf8").on("data", (d: string) => {
      text += d;
    });
    socket.on("close", () => resolve(text)).on("error", reject);
  });

describe("requests with no usable authority", () => {
  // connect-node built each call's URL from the Host header and threw out of the request
  // listener without one: one such request took the whole process down.
  it.each([
    ["an HTTP/1.0 request with no Host", "POST /grpc.health.v1.Health/Check HTTP/1.0\r\n"],
    ["a malformed Host", "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: [bad\r\n"],
  ])("serves %s", async (_, requestLine) => {
    const answer = await rawExchange(
      mesh.url,
      `${requestLine}Content-Type: application/json\r\n`,
      "{}",
    );
    expect(answer).toMatch(/^HTTP\/1\.[01] 200/);
    expect(answer).toContain('"status":"SERVING"');
    expect((await clientFor(Health, "Connect over HTTP/1.1", mesh.url).check({})).status).toBe(
      Status.SERVING,
    );
  });
});
