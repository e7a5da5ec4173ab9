/**
 * Two mesh processes sharing one MongoDB database (FerretDB, which has no
 * change streams): a watch on one sees writes made through the other.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import {
  DataStoreService,
  WatchParametersResponse_Type as ParamEvent,
} from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { ParameterScope } from "../../gen/floworchestrator/datastore/v1/parameter_pb.js";
import { ServiceEvent_Type as ServiceEventType } from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
import { clientFor } from "../support/clients.js";
import { type MeshProcess, spawnMesh } from "../support/process.js";

let a: MeshProcess;
let b: MeshProcess;
beforeAll(async () => {
  const env = {
    FO_MONGODB_URI: inject("infra").mongodbUri,
    FO_MONGODB_DATABASE: `multi_${randomUUID().slice(0, 8)}`,
    FO_WATCH_POLL_INTERVAL: "100 millis",
  };
  [a, b] = await Promise.all([spawnMesh(env), spawnMesh(env)]);
});
afterAll(async () => {
  for (const p of [a, b]) p?.child.kill("SIGTERM");
  await Promise.all([a?.exited, b?.exited]);
});

const dataStore = (p: MeshProcess) => clientFor(DataStoreService, "gRPC (h2c)", p.url);

describe("watch across mesh instances", () => {
  it("WatchServices on A sees a service registered and moved through B", async () => {
    const serviceType = `exp-${randomUUID().slice(0, 8)}`;
    const seen: ServiceEventType[] = [];
    for await (const res of dataStore(a).watchServices({ serviceType }, { timeoutMs: 20_000 })) {
      const type = res.event?.type ?? ServiceEventType.UNSPECIFIED;
      seen.push(type);
      if (type === ServiceEventType.SNAPSHOT_COMPLETE) {
        await dataStore(b).registerService({
          service: { serviceId: "exp-1", version: "1.0.0", serviceType },
        });
      }
      if (type === ServiceEventType.REGISTERED) {
        await dataStore(b).updateServiceStatus({ serviceId: "exp-1", version: "1.0.0", status: 2 });
      }
      if (type === ServiceEventType.STATUS_CHANGED) break;
    }
    expect(seen).toEqual([
      ServiceEventType.SNAPSHOT_COMPLETE,
      ServiceEventType.REGISTERED,
      ServiceEventType.STATUS_CHANGED,
    ]);
  });

  it("WatchParameters on B sees a parameter set and deleted through A", async () => {
    const key = `multi.${randomUUID().slice(0, 8)}`;
    const seen: ParamEvent[] = [];
    for await (const res of dataStore(b).watchParameters(
      { keyPrefix: key },
      { timeoutMs: 20_000 },
    )) {
      seen.push(res.type);
      if (res.type === ParamEvent.SNAPSHOT_COMPLETE) {
        await dataStore(a).setParameter({
          key,
          scope: ParameterScope.SYSTEM,
          value: { kind: { case: "stringValue", value: "on" } },
        });
      }
      if (res.type === ParamEvent.SET) {
        await dataStore(a).deleteParameter({ key, scope: ParameterScope.SYSTEM });
      }
      if (res.type === ParamEvent.DELETED) break;
    }
    expect(seen).toEqual([ParamEvent.SNAPSHOT_COMPLETE, ParamEvent.SET, ParamEvent.DELETED]);
  });
});
