/**
 * MemoryManager over the wire: a @grpc/grpc-js client and a Connect client,
 * error codes with the bad segment named, WatchMemory through the wire.
 * Embedded backend.
 */
import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  WatchMemoryResponse_Type as EventType,
  MemoryManagerService,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import {
  Health,
  HealthCheckResponse_ServingStatus as HealthStatus,
} from "../../gen/grpc/health/v1/health_pb.js";
import { clientFor, failureOf } from "../support/clients.js";
import { grpcJsClient } from "../support/grpcjs.js";
import { startMesh, type TestMesh } from "../support/mesh.js";

let mesh: TestMesh;
let grpcJs: ReturnType<typeof grpcJsClient>;
const m = MemoryManagerService.method;
const connect = () => clientFor(MemoryManagerService, "Connect over HTTP/1.1", mesh.url);
const text = (exec: string, rest = "FLOW-1:PROCESS:main:2:Result") => ({
  kind: { case: "text" as const, value: `${exec}:${rest}` },
});

beforeAll(async () => {
  mesh = await startMesh();
  grpcJs = grpcJsClient(mesh.port);
});
afterAll(async () => {
  grpcJs.close();
  await mesh.close();
});

describe("MemoryManager over the wire", () => {
  it("allocates over gRPC, writes and reads over Connect, owners and versions enforced", async () => {
    const exec = `EXEC-${randomUUID().slice(0, 8)}`;
    const allocated = await grpcJs.unary(m.allocate, {
      address: text(exec),
      owner: "step-2",
      contentType: "application/json",
    });
    expect(allocated.entry?.address).toBe(`${exec}:FLOW-1:PROCESS:main:2:Result`);
    const data = new TextEncoder().encode('{"rows":3}');
    const written = await connect().write({
      address: text(exec),
      owner: "step-2",
      data,
      expectedVersion: 0n,
    });
    expect(written.entry?.version).toBe(1n);
    const read = await grpcJs.unary(m.read, { address: text(exec) });
    expect(new TextDecoder().decode(read.data)).toBe('{"rows":3}');
    expect(read.entry?.owner).toBe("step-2");

    const intruder = (await grpcJs
      .unary(m.write, { address: text(exec), owner: "step-9", data })
      .catch((e: grpc.ServiceError) => e)) as grpc.ServiceError;
    expect(intruder.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(
      (
        await failureOf(
          connect().write({ address: text(exec), owner: "step-2", data, expectedVersion: 0n }),
        )
      ).code,
    ).toBe(Code.Aborted);
    expect((await failureOf(connect().allocate({ address: text(exec), owner: "x" }))).code).toBe(
      Code.AlreadyExists,
    );
  });

  it("names the bad address segment in a BadRequest detail and stays healthy", async () => {
    const bad = [
      "E:F:PROCESS:main:2",
      "E:F:TRANSFORM:main:2:Result",
      "E::PROCESS:main:2:Result",
      "E:F:PROCESS:main..a:2:Result",
      "E:F:PROCESS:other:2:Result",
    ];
    const fields = [];
    for (const value of bad) {
      const err = await failureOf(connect().read({ address: { kind: { case: "text", value } } }));
      expect(err.code).toBe(Code.InvalidArgument);
      fields.push(err.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field);
    }
    expect(fields).toEqual([
      "address",
      "address.step_type",
      "address.flow_id",
      "address.branch_path",
      "address.branch_path",
    ]);
    const tooMuch = await failureOf(
      connect().allocate({
        address: text(`E-${randomUUID().slice(0, 6)}`),
        owner: "o",
        ttl: { seconds: 30n * 24n * 3600n },
      }),
    );
    expect(tooMuch.code).toBe(Code.InvalidArgument);
    const health = clientFor(Health, "gRPC (h2c)", mesh.url);
    expect((await health.check({})).status).toBe(HealthStatus.SERVING);
  });

  it("WatchMemory streams events through the wire", async () => {
    const exec = `EXEC-${randomUUID().slice(0, 8)}`;
    const seen: EventType[] = [];
    for await (const e of connect().watchMemory({ executionId: exec }, { timeoutMs: 10_000 })) {
      seen.push(e.type);
      if (e.type === EventType.STARTED)
        await grpcJs.unary(m.allocate, { address: text(exec), owner: "o" });
      if (e.type === EventType.ALLOCATED) {
        await grpcJs.unary(m.write, {
          address: text(exec),
          owner: "o",
          data: new Uint8Array([1, 2, 3]),
        });
      }
      if (e.type === EventType.WRITTEN)
        await grpcJs.unary(m.release, { address: text(exec), owner: "o" });
      if (e.type === EventType.RELEASED) break;
    }
    expect(seen).toEqual([
      EventType.STARTED,
      EventType.ALLOCATED,
      EventType.WRITTEN,
      EventType.RELEASED,
    ]);
  });
});
