/**
 * FerretDB (the DataStore's MongoDB backend) killed under load: a mesh
 * process on a FerretDB server of this test's own (SQLite on a kept data
 * directory) serves creates, updates, reads and listings of entities and
 * service registrations while a WatchServices stream follows the registry
 * (and calls go to the other services, on their embedded backends);
 * FerretDB is killed with SIGKILL, kept down 10 s and started again on the
 * same data.
 * Calls fail fast with UNAVAILABLE (none outlives its deadline), DataStore
 * health goes NOT_SERVING then SERVING, the mesh stays up without leaking,
 * every write that returned OK is there afterwards (updates at least at the
 * version they returned), and the watch shows what is registered after.
 */
import { describe, expect, it } from "@effect/vitest";
import { Effect } from "effect";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { ServiceEvent_Type as ServiceEventType } from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { privateFerretDb } from "../support/ferretdb-server.js";
import {
  checkFault,
  DEADLINE_MS,
  holdStream,
  type Op,
  report,
  runFault,
  startMesh,
  until,
} from "./harness.js";

const KIND = "faultprobe";

describe("FerretDB killed under load", () => {
  it.scopedLive(
    "calls fail fast with UNAVAILABLE, NOT_SERVING then SERVING, no crash or leak, every acknowledged write readable",
    () =>
      Effect.gen(function* () {
        const ferret = yield* privateFerretDb;
        yield* Effect.promise(() => ferret.start());
        const mesh = yield* Effect.acquireRelease(
          Effect.promise(() =>
            startMesh({ FO_MONGODB_URI: ferret.uri, FO_MONGODB_DATABASE: "faults" }),
          ),
          (m) => Effect.promise(() => m.stop()),
        );
        const ds = mesh.client(DataStoreService);
        const memory = mesh.client(MemoryManagerService);
        const bus = mesh.client(MessageBusService);

        // A watcher of the registry, reopened when its stream ends, as a client would.
        const watched = new Set<string>();
        let watching = 0;
        const watch = holdStream(
          (signal) => ds.watchServices({ serviceType: KIND }, { signal }),
          ({ event }) => {
            if (event?.type === ServiceEventType.SNAPSHOT_COMPLETE) watching++;
            if (
              event?.service !== undefined &&
              (event.type === ServiceEventType.SNAPSHOT ||
                event.type === ServiceEventType.REGISTERED)
            ) {
              watched.add(event.service.serviceId);
            }
          },
        );
        yield* Effect.addFinalizer(() => Effect.promise(watch.stop));
        yield* Effect.promise(() => until("watching", () => watching > 0, 30_000));

        /** Service id → when its registration returned OK. */
        const registered = new Map<string, number>();
        /** Entity id → highest version a call that returned OK reported. */
        const acknowledged = new Map<string, bigint>();
        let next = 0;
        const anyAcknowledged = () => {
          const ids = [...acknowledged.keys()];
          return ids[Math.floor(Math.random() * ids.length)];
        };
        const acknowledge = (id: string, version: bigint) => {
          const known = acknowledged.get(id) ?? 0n;
          acknowledged.set(id, version > known ? version : known);
        };

        const dataStoreOps: Op[] = [
          {
            name: "CreateEntity",
            run: async (options) => {
              const id = `e-${next++}`;
              const { entity } = await ds.createEntity(
                { kind: KIND, id, document: { n: next, phase: "load" }, labels: { run: "faults" } },
                options,
              );
              acknowledge(id, entity?.version ?? 0n);
            },
          },
          {
            name: "UpdateEntity",
            run: async (options) => {
              const id = anyAcknowledged();
              if (id === undefined) return false;
              const { entity } = await ds.updateEntity(
                { kind: KIND, id, document: { touched: Date.now() } },
                options,
              );
              acknowledge(id, entity?.version ?? 0n);
            },
          },
          {
            name: "GetEntity",
            run: async (options) => {
              const id = anyAcknowledged();
              if (id === undefined) return false;
              await ds.getEntity({ kind: KIND, id }, options);
            },
          },
          {
            name: "ListEntities",
            run: (options) => ds.listEntities({ kind: KIND, pageSize: 20 }, options),
          },
          {
            name: "RegisterService",
            run: async (options) => {
              const serviceId = `svc-${next++}`;
              await ds.registerService(
                {
                  service: {
                    serviceId,
                    version: "1.0.0",
                    serviceType: KIND,
                    endpoints: ["127.0.0.1:1"],
                  },
                  leaseDuration: { seconds: 600n },
                },
                options,
              );
              registered.set(serviceId, Date.now());
            },
          },
        ];
        // The same number of calls to services on other (embedded) backends.
        const otherOps: Op[] = [
          {
            name: "other:ListAddresses",
            run: (options) => memory.listAddresses({ executionId: "EXEC-faults" }, options),
          },
          {
            name: "other:PublishEvent",
            run: (options) =>
              bus.publishEvent(
                { event: { messageType: "FaultProbe", payload: new Uint8Array() } },
                options,
              ),
          },
        ];

        const run = yield* Effect.promise(() =>
          runFault({
            mesh,
            service: DataStoreService.typeName,
            backend: ferret,
            ops: [...dataStoreOps, ...dataStoreOps, ...otherOps],
            workers: 5,
          }),
        );
        yield* Effect.promise(() =>
          checkFault("ferretdb", run, mesh, new Set(dataStoreOps.map((o) => o.name))),
        );

        // Every acknowledged write is there, each entity at least at its acknowledged version.
        const missing: string[] = [];
        const behind: string[] = [];
        for (const [id, version] of acknowledged) {
          const { entity } = yield* Effect.promise(() =>
            ds.getEntity({ kind: KIND, id }, { timeoutMs: 5_000 }).catch((e: unknown) => {
              missing.push(`${id}: ${String(e)}`);
              return { entity: undefined };
            }),
          );
          if (entity !== undefined && entity.version < version) {
            behind.push(`${id}: at ${entity.version}, acknowledged ${version}`);
          }
        }
        expect(missing, "acknowledged entities missing after recovery").toEqual([]);
        expect(behind, "acknowledged updates lost after recovery").toEqual([]);
        const created = run.records.filter((r) => r.op === "CreateEntity" && r.code === undefined);
        expect(acknowledged.size).toBe(created.length);

        // Every entity takes an update again, by the deadline: none is left
        // claimed by an update the kill cut short.
        const stuck: string[] = [];
        for (const id of acknowledged.keys()) {
          yield* Effect.promise(() =>
            ds
              .updateEntity(
                { kind: KIND, id, document: { recovered: true } },
                { timeoutMs: DEADLINE_MS },
              )
              .catch((e: unknown) => stuck.push(`${id}: ${String(e)}`)),
          );
        }
        expect(stuck, "entities whose update fails after recovery").toEqual([]);

        // Every acknowledged registration is there too.
        const unregistered: string[] = [];
        for (const serviceId of registered.keys()) {
          yield* Effect.promise(() =>
            ds
              .getService({ serviceId, version: "1.0.0" }, { timeoutMs: 5_000 })
              .catch((e: unknown) => unregistered.push(`${serviceId}: ${String(e)}`)),
          );
        }
        expect(unregistered, "acknowledged registrations missing after recovery").toEqual([]);

        // The watch (kept open, or reopened) shows what was registered once SERVING again.
        const since = [...registered].filter(([, at]) => at >= run.timeline.serving);
        expect(since.length).toBeGreaterThan(0);
        const unseen = () => since.filter(([id]) => !watched.has(id)).map(([id]) => id);
        yield* Effect.promise(() =>
          until(
            "the watch shows every registration since SERVING",
            () => unseen().length === 0,
            10_000,
          ).catch((e: unknown) => {
            throw new Error(
              `${(e as Error).message}: ${unseen().length} of ${since.length} unseen; stream ends: ${watch.ends.join(", ")}`,
            );
          }),
        );
        expect(watch.ends.filter((end) => end !== "Unavailable")).toEqual([]);
        report("ferretdb", {
          acknowledgedEntities: acknowledged.size,
          acknowledgedUpdates: run.records.filter(
            (r) => r.op === "UpdateEntity" && r.code === undefined,
          ).length,
          readableAfterRecovery: acknowledged.size - missing.length,
          acknowledgedRegistrations: registered.size,
          registrationsReadable: registered.size - unregistered.length,
          watchedSinceServing: since.length,
          watchesOpened: watching,
          streamEnds: watch.ends,
        });
        yield* Effect.promise(watch.stop);
        expect(yield* Effect.promise(() => mesh.stop()), "the mesh's exit code on SIGTERM").toBe(0);
      }),
    150_000,
  );
});
