/** A plain @grpc/grpc-js client, as other Node services in the mesh call us. */
import { create, fromBinary, type Message, toBinary } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema } from "../../gen/floworchestrator/common/v1/error_pb.js";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import {
  HealthCheckRequestSchema,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.js";
import { setHealth, startMesh, type TestMesh } from "../support/mesh.js";

const codec = <T extends Message>(schema: GenMessage<T>) => ({
  serialize: (m: T) => Buffer.from(toBinary(schema, m)),
  deserialize: (b: Buffer) => fromBinary(schema, b),
});
const req = codec(HealthCheckRequestSchema);
const res = codec(HealthCheckResponseSchema);

let mesh: TestMesh;
let client: grpc.Client;
beforeAll(async () => {
  mesh = await startMesh();
  client = new grpc.Client(`127.0.0.1:${mesh.port}`, grpc.credentials.createInsecure());
});
afterAll(async () => {
  client.close();
  await mesh.close();
});

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

describe("@grpc/grpc-js client", () => {
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
      create(HealthCheckRequestSchema, { service: "grpcjs.watched" }),
    );
    const seen: Status[] = [];
    for await (const msg of call as AsyncIterable<HealthCheckResponse>) {
      seen.push(msg.status);
      if (seen.length === 1) await setHealth(mesh, "grpcjs.watched", "SERVING");
      if (seen.length === 2) break;
    }
    call.cancel();
    expect(seen).toEqual([Status.SERVICE_UNKNOWN, Status.SERVING]);
  });
});
