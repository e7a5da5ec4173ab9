/**
 * A plain @grpc/grpc-js client, as other Node services in the mesh call us:
 * on the one port (connect-node) and on the native gRPC port (grpc-js).
 */
import { create, fromBinary, type Message, toBinary } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema } from "../../gen/floworchestrator/common/v1/error_pb.js";
import {
  type TryLockRequest,
  TryLockRequestSchema,
  type TryLockResponse,
  TryLockResponseSchema,
  type UnlockRequest,
  UnlockRequestSchema,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { ConsumeRequestSchema } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import {
  HealthCheckRequestSchema,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.js";
import {
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { setHealth, startMesh, type TestMesh } from "../support/mesh.js";

const codec = <T extends Message>(schema: GenMessage<T>) => ({
  serialize: (m: T) => Buffer.from(toBinary(schema, m)),
  deserialize: (b: Buffer) => fromBinary(schema, b),
});
const req = codec(HealthCheckRequestSchema);
const res = codec(HealthCheckResponseSchema);

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh();
});
afterAll(() => mesh.close());

describe.each([
  ["the one port", () => new URL(mesh.url).host],
  ["the native gRPC port", () => new URL(mesh.grpcUrl as string).host],
])("@grpc/grpc-js client on %s", (where, target) => {
  let client: grpc.Client;
  beforeAll(() => {
    client = new grpc.Client(target(), grpc.credentials.createInsecure());
  });
  afterAll(() => client.close());

  const check = (service: string) =>
    new Promise<HealthCheckResponse>((resolve, reject) =>
      client.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        req.serialize,
        res.deserialize,
        create(HealthCheckRequestSchema, { service }),
        (err, value) => (err || !value ? reject(err) : resolve(value)),
      ),
    );

  it("calls Health/Check", async () => {
    expect((await check("")).status).toBe(Status.SERVING);
  });

  it("gets the status code and the FlowOrchestrator detail in grpc-status-details-bin", async () => {
    const err = (await check("missing").catch((e: unknown) => e)) as grpc.ServiceError;
    expect(err.code).toBe(grpc.status.NOT_FOUND);
    const [bin] = err.metadata.get("grpc-status-details-bin");
    const status = fromBinary(StatusSchema, bin as Buffer);
    expect(status.code).toBe(grpc.status.NOT_FOUND);
    const detail = status.details
      .map((any) => anyUnpack(any, ErrorDetailSchema))
      .find((d) => d !== undefined);
    expect(detail?.code).toBe("RESOURCE_ERROR.NOT_FOUND");
  });

  it("streams Health/Watch", async () => {
    const call = client.makeServerStreamRequest(
      "/grpc.health.v1.Health/Watch",
      req.serialize,
      res.deserialize,
      create(HealthCheckRequestSchema, { service: `grpcjs.watched on ${where}` }),
    );
    const seen: Status[] = [];
    for await (const msg of call as AsyncIterable<HealthCheckResponse>) {
      seen.push(msg.status);
      if (seen.length === 1) await setHealth(mesh, `grpcjs.watched on ${where}`, "SERVING");
      if (seen.length === 2) break;
    }
    call.cancel();
    expect(seen).toEqual([Status.SERVICE_UNKNOWN, Status.SERVING]);
  });

  it("answers a request that is not protobuf with a status, and keeps serving", async () => {
    const raw = (b: Buffer) => b;
    const err = await new Promise<grpc.ServiceError>((resolve, reject) =>
      client.makeUnaryRequest(
        "/floworchestrator.datastore.v1.DataStoreService/GetEntity",
        raw,
        raw,
        Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        (e) => (e ? resolve(e) : reject(new Error("expected a failure"))),
      ),
    );
    expect([grpc.status.INTERNAL, grpc.status.INVALID_ARGUMENT]).toContain(err.code);
    expect(err.details).toMatch(/parse|premature|invalid/i);
    expect((await check("")).status).toBe(Status.SERVING);
  });

  it("fails a Consume stream with a status when a later request is not protobuf", async () => {
    const raw = (b: Buffer) => b;
    const call = client.makeBidiStreamRequest(
      "/floworchestrator.messaging.v1.MessageBusService/Consume",
      raw,
      raw,
    );
    const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    const first = new Promise<void>((resolve) => call.once("data", () => resolve()));
    call.on("error", () => {});
    const group = `garbage-${where.replaceAll(" ", "-")}`;
    call.write(
      Buffer.from(
        toBinary(
          ConsumeRequestSchema,
          create(ConsumeRequestSchema, {
            request: { case: "subscribe", value: { group, destination: group } },
          }),
        ),
      ),
    );
    await first; // subscribed
    call.write(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]));
    const status = await ended;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toMatch(/could not be read/);
    call.end();
    expect((await check("")).status).toBe(Status.SERVING);
  });

  const tryLock = (
    lock: string,
    holder: string,
    waitMs: number,
    options: grpc.CallOptions = {},
    onCall: (call: grpc.ClientUnaryCall) => void = () => {},
  ) =>
    new Promise<TryLockResponse>((resolve, reject) =>
      onCall(
        client.makeUnaryRequest(
          "/floworchestrator.memory.v1.MemoryManagerService/TryLock",
          (m: TryLockRequest) => Buffer.from(toBinary(TryLockRequestSchema, m)),
          (b: Buffer) => fromBinary(TryLockResponseSchema, b),
          create(TryLockRequestSchema, {
            resource: { kind: { case: "name", value: lock } },
            holder,
            lease: { seconds: 60n },
            waitTimeout: { seconds: BigInt(Math.floor(waitMs / 1000)) },
          }),
          options,
          (err, value) => (err || !value ? reject(err) : resolve(value)),
        ),
      ),
    );

  // A waiting call the client gave up on must stop waiting: otherwise it takes the lock once
  // it is free, for a caller that is gone.
  it.each([
    ["its deadline passes", true, grpc.status.DEADLINE_EXCEEDED],
    ["the client cancels it", false, grpc.status.CANCELLED],
  ] as const)("stops a waiting call when %s", async (_, byDeadline, code) => {
    const lock = `grpcjs-wait-${where.replaceAll(" ", "-")}-${code}`;
    expect((await tryLock(lock, "first", 0)).acquired).toBe(true);
    const options = byDeadline ? { deadline: Date.now() + 300 } : {};
    const waiting = tryLock(lock, "gone", 10_000, options, (call) => {
      if (!byDeadline) setTimeout(() => call.cancel(), 300);
    });
    expect(((await waiting.catch((e: unknown) => e)) as grpc.ServiceError).code).toBe(code);
    await new Promise<void>((resolve, reject) =>
      client.makeUnaryRequest(
        "/floworchestrator.memory.v1.MemoryManagerService/Unlock",
        (m: UnlockRequest) => Buffer.from(toBinary(UnlockRequestSchema, m)),
        (b: Buffer) => b,
        create(UnlockRequestSchema, {
          resource: { kind: { case: "name", value: lock } },
          holder: "first",
        }),
        (err) => (err ? reject(err) : resolve()),
      ),
    );
    // Longer than the embedded store's wait between tries: a waiter left running would have
    // taken the lock by now.
    await new Promise((r) => setTimeout(r, 500));
    expect((await tryLock(lock, "third", 0)).acquired).toBe(true);
  });

  it("lists the services through reflection", async () => {
    const call = client.makeBidiStreamRequest(
      "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      (m: ServerReflectionRequest) => Buffer.from(toBinary(ServerReflectionRequestSchema, m)),
      (b: Buffer) => fromBinary(ServerReflectionResponseSchema, b),
    );
    call.write(
      create(ServerReflectionRequestSchema, {
        messageRequest: { case: "listServices", value: "" },
      }),
    );
    call.end();
    const responses: ServerReflectionResponse[] = [];
    for await (const r of call as AsyncIterable<ServerReflectionResponse>) responses.push(r);
    const listed = responses[0]?.messageResponse;
    expect(listed?.case).toBe("listServicesResponse");
    const names =
      listed?.case === "listServicesResponse" ? listed.value.service.map((x) => x.name) : [];
    expect(names).toContain("floworchestrator.memory.v1.MemoryManagerService");
    expect(names).toContain("grpc.health.v1.Health");
  });
});
