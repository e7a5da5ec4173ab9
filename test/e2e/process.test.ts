/** The mesh as a process: start-up errors and graceful shutdown on signals. */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.js";
import { runMeshToExit, spawnMesh } from "../support/process.js";

describe("mesh process", () => {
  it("refuses a bad setting with one line naming the variable and exit code 2", async () => {
    const { code, stderr } = await runMeshToExit({ FO_PORT: "eighty" });
    expect(code).toBe(2);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toContain("FO_PORT");
  });

  it.each(["SIGTERM", "SIGINT"] as const)(
    "on %s: health turns NOT_SERVING, streams end, open HTTP/2 sessions do not hold it, exit 0",
    async (signal) => {
      const mesh = await spawnMesh();
      // The transport keeps its HTTP/2 session open: the server must not wait for it.
      const health = createClient(Health, createGrpcTransport({ baseUrl: mesh.url }));
      expect((await health.check({})).status).toBe(Status.SERVING);
      const seen: Status[] = [];
      for await (const res of health.watch({})) {
        seen.push(res.status);
        if (seen.length === 1) mesh.child.kill(signal);
      }
      expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING]);
      expect(await mesh.exited).toBe(0);
      expect(mesh.lines.some((l) => l.includes("server closed"))).toBe(true);
    },
  );
});
