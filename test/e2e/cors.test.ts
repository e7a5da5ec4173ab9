/** CORS as a browser on another origin sees it (Connect and gRPC-Web). */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type TestMesh } from "../support/mesh.js";

const allowed = "https://console.example";
let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh({ corsOrigins: [allowed, "https://other.example"] });
});
afterAll(() => mesh.close());

const preflight = (origin: string, headers: string) =>
  fetch(`${mesh.url}/grpc.health.v1.Health/Check`, {
    method: "OPTIONS",
    headers: {
      Origin: origin,
      "Access-Control-Request-Method": "POST",
      "Access-Control-Request-Headers": headers,
    },
  });

describe("CORS", () => {
  it("answers a Connect preflight from an allowed origin", async () => {
    const res = await preflight(
      allowed,
      "content-type,connect-protocol-version,connect-timeout-ms",
    );
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe(allowed);
    expect(res.headers.get("access-control-allow-methods")).toContain("POST");
    const allowHeaders = res.headers.get("access-control-allow-headers")?.toLowerCase() ?? "";
    for (const h of [
      "content-type",
      "connect-protocol-version",
      "connect-timeout-ms",
      "authorization",
    ]) {
      expect(allowHeaders).toContain(h);
    }
  });

  it("answers a gRPC-Web preflight", async () => {
    const res = await preflight(allowed, "content-type,x-grpc-web,x-user-agent,grpc-timeout");
    expect(res.status).toBe(204);
    const allowHeaders = res.headers.get("access-control-allow-headers")?.toLowerCase() ?? "";
    for (const h of ["x-grpc-web", "x-user-agent", "grpc-timeout"])
      expect(allowHeaders).toContain(h);
  });

  it("refuses a preflight from an origin that is not allowed", async () => {
    const res = await preflight("https://evil.example", "content-type");
    expect(res.status).toBe(403);
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("exposes the protocol headers on the actual response", async () => {
    const res = await fetch(`${mesh.url}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { Origin: allowed, "Content-Type": "application/json" },
      body: "{}",
    });
    expect(await res.json()).toEqual({ status: "SERVING" });
    expect(res.headers.get("access-control-allow-origin")).toBe(allowed);
    const exposed = res.headers.get("access-control-expose-headers")?.toLowerCase() ?? "";
    for (const h of ["grpc-status", "grpc-message", "grpc-status-details-bin"])
      expect(exposed).toContain(h);
  });
});
