/** The mesh as a process: start-up errors and graceful shutdown on signals. */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

  it("refuses a data directory another mesh has open: one line, exit code 1", async () => {
    const first = await spawnMesh({ FO_GRPC_PORT: "off" });
    const dir = first.dataDir;
    try {
      const { code, stderr } = await runMeshToExit({ FO_PORT: "0", FO_DATA_DIR: dir });
      expect(code).toBe(1);
      expect(stderr.trim().split("\n")).toHaveLength(1);
      expect(stderr).toContain(`is in use by process ${first.child.pid}`);
    } finally {
      first.child.kill("SIGTERM");
      await first.exited;
    }
  });

  it("refuses a port that is taken: one line, exit code 1", async () => {
    const first = await spawnMesh({ FO_GRPC_PORT: "off" });
    try {
      const { code, stderr } = await runMeshToExit({
        FO_PORT: new URL(first.url).port,
        FO_GRPC_PORT: "off",
        FO_DATA_DIR: mkdtempSync(join(tmpdir(), "fo-mesh-")),
      });
      expect(code).toBe(1);
      expect(stderr.trim().split("\n")).toHaveLength(1);
      expect(stderr).toContain(`cannot listen on 127.0.0.1:${new URL(first.url).port}`);
    } finally {
      first.child.kill("SIGTERM");
      await first.exited;
    }
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
