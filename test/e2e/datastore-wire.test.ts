/**
 * DataStore over the wire: each RPC group through a @grpc/grpc-js client and a
 * Connect client, errors with their codes and details, watch streams through
 * the wire and cancelled by the client. Embedded backend.
 */
import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema } from "../../gen/floworchestrator/common/v1/error_pb.js";
import {
  DataStoreService,
  WatchParametersResponse_Type as ParamEvent,
  type WatchParametersResponse,
  type WatchServicesResponse,
} from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { ParameterScope } from "../../gen/floworchestrator/datastore/v1/parameter_pb.js";
import {
  ServiceEvent_Type as ServiceEventType,
  ServiceStatus,
} from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
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
const m = DataStoreService.method;
const connect = () => clientFor(DataStoreService, "Connect over HTTP/1.1", mesh.url);
const unique = (prefix: string) => `${prefix}_${randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  mesh = await startMesh();
  grpcJs = grpcJsClient(mesh.port);
});
afterAll(async () => {
  grpcJs.close();
  await mesh.close();
});

describe("DataStore over the wire", () => {
  it("entities: create over gRPC, read over Connect, errors with codes and details", async () => {
    const kind = unique("order");
    const created = await grpcJs.unary(m.createEntity, {
      kind,
      id: "o-1",
      document: { total: 12.5 },
      labels: { env: "test" },
    });
    expect(created.entity?.version).toBe(1n);
    const read = await connect().getEntity({ kind, id: "o-1" });
    expect(read.entity?.document).toEqual({ total: 12.5 });

    const missing = (await grpcJs
      .unary(m.getEntity, { kind, id: "nope" })
      .catch((e) => e)) as grpc.ServiceError;
    expect(missing.code).toBe(grpc.status.NOT_FOUND);

    const bad = await failureOf(
      connect().createEntity({ kind, id: "a:b", document: { $where: 1 } }),
    );
    expect(bad.code).toBe(Code.InvalidArgument);
    const fields = bad.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field) ?? [];
    expect(fields).toEqual(expect.arrayContaining(["id", "document.$where"]));
    expect(bad.findDetails(ErrorDetailSchema)[0]?.code).toBe("DATA_ERROR.INVALID_ARGUMENT");

    const stale = await failureOf(
      connect().updateEntity({ kind, id: "o-1", document: { total: 1 }, expectedVersion: 7n }),
    );
    expect(stale.code).toBe(Code.Aborted);
  });

  it("versions: created over Connect, listed over gRPC in semver order", async () => {
    const entityId = unique("flow");
    for (const version of ["1.10.0", "1.9.0", "1.0.0"]) {
      await connect().createVersion({ version: { entityType: "flow", entityId, version } });
    }
    const listed = await grpcJs.unary(m.listVersions, { entityType: "flow", entityId });
    expect(listed.versions.map((v) => v.version)).toEqual(["1.0.0", "1.9.0", "1.10.0"]);
    const latest = await connect().getLatestVersion({ entityType: "flow", entityId });
    expect(latest.version?.version).toBe("1.10.0");
  });

  it("parameters: set over gRPC, resolved over Connect; WatchParameters streams a change", async () => {
    const key = `${unique("batch")}.size`;
    await grpcJs.unary(m.setParameter, {
      key,
      scope: ParameterScope.SYSTEM,
      value: { kind: { case: "numberValue", value: 100 } },
    });
    await grpcJs.unary(m.setParameter, {
      key,
      scope: ParameterScope.FLOW,
      scopeId: "FLOW-1",
      value: { kind: { case: "numberValue", value: 5 } },
    });
    const resolved = await connect().resolveParameters({
      context: { flowId: "FLOW-1" },
      keys: [key],
    });
    expect(resolved.parameters[0]?.sourceScope).toBe(ParameterScope.FLOW);

    const abort = new AbortController();
    const events: WatchParametersResponse[] = [];
    for await (const e of connect().watchParameters({ keyPrefix: key }, { signal: abort.signal })) {
      events.push(e);
      if (e.type === ParamEvent.SNAPSHOT_COMPLETE) {
        await grpcJs.unary(m.setParameter, {
          key,
          scope: ParameterScope.SYSTEM,
          value: { kind: { case: "numberValue", value: 200 } },
        });
      }
      if (e.type === ParamEvent.SET) break;
    }
    expect(events.map((e) => e.type)).toEqual([
      ParamEvent.SNAPSHOT,
      ParamEvent.SNAPSHOT,
      ParamEvent.SNAPSHOT_COMPLETE,
      ParamEvent.SET,
    ]);
  });

  it("registry: WatchServices over gRPC sees a registration, and the client can cancel it", async () => {
    const serviceType = unique("importer").replace(/_/g, "-");
    const call = grpcJs.serverStream(m.watchServices, { serviceType });
    const seen: ServiceEventType[] = [];
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.on("error", () => {}); // the cancellation below surfaces as an error event too
    call.on("data", (res: WatchServicesResponse) => {
      const type = res.event?.type ?? ServiceEventType.UNSPECIFIED;
      seen.push(type);
      if (type === ServiceEventType.SNAPSHOT_COMPLETE) {
        void connect().registerService({
          service: {
            serviceId: unique("svc"),
            version: "1.0.0",
            serviceType,
            endpoints: ["127.0.0.1:9000"],
          },
        });
      }
      if (type === ServiceEventType.REGISTERED) call.cancel();
    });
    expect((await status).code).toBe(grpc.status.CANCELLED);
    expect(seen).toEqual([ServiceEventType.SNAPSHOT_COMPLETE, ServiceEventType.REGISTERED]);

    const listed = await grpcJs.unary(m.listServices, {
      serviceType,
      status: ServiceStatus.UNINITIALIZED,
    });
    expect(listed.services).toHaveLength(1);
  });

  it("bad input of every kind gets INVALID_ARGUMENT and leaves the server healthy", async () => {
    const deep: Record<string, unknown> = {};
    let at = deep;
    for (let i = 0; i < 70; i++) at = at.x = {} as Record<string, unknown>;
    const bad: Array<() => Promise<unknown>> = [
      () => connect().getEntity({ kind: "flow", id: "" }),
      () => connect().getEntity({ kind: "flow", id: "x".repeat(257) }),
      () => connect().getEntity({ kind: "flow", id: "a\u0000b" }),
      () => connect().getEntity({ kind: "Flow!", id: "a" }),
      () => connect().createEntity({ kind: "flow", document: { "a.b": 1 } }),
      () => connect().createEntity({ kind: "flow", document: deep as never }),
      () => connect().createEntity({ kind: "flow", document: {}, labels: { "bad key!": "v" } }),
      () =>
        connect().listEntities({
          kind: "flow",
          filters: [
            { field: "$where", operator: 1, value: { kind: { case: "stringValue", value: "1" } } },
          ],
        }),
      () => connect().listEntities({ kind: "flow", pageSize: -1 }),
      () => connect().listEntities({ kind: "flow", pageToken: "forged" }),
      () =>
        connect().setParameter({
          key: "k:1",
          scope: 1,
          value: { kind: { case: "numberValue", value: 1 } },
        }),
      () =>
        connect().createVersion({ version: { entityType: "flow", entityId: "f", version: "1.0" } }),
      () =>
        connect().registerService({
          service: { serviceId: "s", version: "v1", serviceType: "importer" },
        }),
    ];
    const codes = [];
    for (const call of bad) codes.push((await failureOf(call())).code);
    expect(codes).toEqual(bad.map(() => Code.InvalidArgument));
    const health = clientFor(Health, "gRPC (h2c)", mesh.url);
    expect((await health.check({})).status).toBe(HealthStatus.SERVING);
  });
});
