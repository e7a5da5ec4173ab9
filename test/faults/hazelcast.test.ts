/**
 * Hazelcast (the MemoryManager's store) killed under load: a mesh process
 * on a single Hazelcast member of this test's own (no backups, no
 * persistence) allocates, writes, reads and lists memory addresses while a
 * WatchMemory stream follows them (and calls go to the other services, on
 * their embedded backends); the member is killed with SIGKILL, kept down
 * 10 s and started again, empty. Calls fail fast with UNAVAILABLE (none
 * outlives its deadline), MemoryManager health goes NOT_SERVING then SERVING, the mesh
 * stays up without leaking, and memory behaves as a lone member without
 * persistence guarantees: what was written before the kill is gone
 * (NOT_FOUND), what is written after the restart is stored, readable and
 * watched (the mesh's entry listener is registered again on the new member).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "@effect/vitest";
import { Effect } from "effect";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import {
  MemoryManagerService,
  WatchMemoryResponse_Type as WatchType,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { privateHazelcast } from "../support/hazelcast-member.js";
import { checkFault, holdStream, type Op, report, runFault, startMesh, until } from "./harness.js";

const EXECUTION = "EXEC-faults";
const OWNER = "fault-step";
const text = (address: string) => ({ kind: { case: "text" as const, value: address } });

describe("Hazelcast killed under load", () => {
  it.scopedLive(
    "calls fail fast with UNAVAILABLE, NOT_SERVING then SERVING, no crash or leak, memory lost with the lone member, new writes stored and watched",
    () =>
      Effect.gen(function* () {
        const member = yield* privateHazelcast;
        yield* Effect.promise(() => member.start());
        const mesh = yield* Effect.acquireRelease(
          Effect.promise(() =>
            startMesh({
              FO_HAZELCAST_MEMBERS: member.address,
              FO_HAZELCAST_CLUSTER: member.clusterName,
            }),
          ),
          (m) => Effect.promise(() => m.stop()),
        );
        const memory = mesh.client(MemoryManagerService);
        const ds = mesh.client(DataStoreService);
        const bus = mesh.client(MessageBusService);

        // A watcher of the execution, reopened when its stream ends, as a client would.
        const watched = new Set<string>();
        let started = 0;
        const watch = holdStream(
          (signal) => memory.watchMemory({ executionId: EXECUTION }, { signal }),
          (e) => {
            if (e.type === WatchType.STARTED) started++;
            if (e.type === WatchType.WRITTEN) watched.add(e.address);
          },
        );
        yield* Effect.addFinalizer(() => Effect.promise(watch.stop));
        yield* Effect.promise(() => until("watching", () => started > 0, 30_000));

        let next = 0;
        /** Allocated, not written yet. */
        const allocated: string[] = [];
        /** Address → when its write returned OK, and the bytes written. */
        const written = new Map<string, { at: number; data: Uint8Array }>();
        /** Writes acknowledged from here on are on the restarted member. */
        let epoch = 0;
        const readable = () => [...written].filter(([, w]) => w.at >= epoch).map(([a]) => a);

        const memoryOps: Op[] = [
          {
            name: "Allocate",
            run: async (options) => {
              const address = `${EXECUTION}:FLOW-1:PROCESS:main:s${next++}:json`;
              await memory.allocate({ address: text(address), owner: OWNER }, options);
              allocated.push(address);
            },
          },
          {
            name: "Write",
            run: async (options) => {
              const address = allocated.shift();
              if (address === undefined) return false;
              const data = new TextEncoder().encode(`{"address":"${address}"}`);
              await memory.write(
                { address: text(address), owner: OWNER, data, contentType: "application/json" },
                options,
              );
              written.set(address, { at: Date.now(), data });
            },
          },
          {
            name: "Read",
            run: async (options) => {
              const all = readable();
              const address = all[Math.floor(Math.random() * all.length)];
              if (address === undefined) return false;
              await memory.read({ address: text(address) }, options);
            },
          },
          {
            name: "ListAddresses",
            run: (options) =>
              memory.listAddresses({ executionId: EXECUTION, pageSize: 20 }, options),
          },
        ];
        const otherOps: Op[] = [
          {
            name: "other:ListEntities",
            run: (options) => ds.listEntities({ kind: "faultprobe", pageSize: 5 }, options),
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
            service: MemoryManagerService.typeName,
            backend: member,
            ops: [...memoryOps, ...memoryOps, ...otherOps],
            workers: 5,
            onRestart: (at) => {
              epoch = at;
            },
          }),
        );
        yield* Effect.promise(() =>
          checkFault("hazelcast", run, mesh, new Set(memoryOps.map((o) => o.name))),
        );
        const { restart, serving } = run.timeline;

        // Written before the kill: gone with the member (no backup, no persistence).
        const before = [...written].filter(([, w]) => w.at < restart);
        const after = [...written].filter(([, w]) => w.at >= restart);
        expect(before.length, "writes acknowledged before the kill").toBeGreaterThan(0);
        expect(after.length, "writes acknowledged after the restart").toBeGreaterThan(0);
        const outcome = async (address: string) =>
          memory.read({ address: text(address) }, { timeoutMs: 5_000 }).then(
            (r) => r,
            (e: unknown) => Code[ConnectError.from(e).code],
          );
        const survived: string[] = [];
        for (const [address] of before) {
          const r = yield* Effect.promise(() => outcome(address));
          if (r !== "NotFound") survived.push(`${address}: ${typeof r === "string" ? r : "found"}`);
        }
        expect(survived, "entries written before the kill that are not NOT_FOUND").toEqual([]);

        // Written after the restart: stored, with the bytes written.
        const lost: string[] = [];
        for (const [address, w] of after) {
          const r = yield* Effect.promise(() => outcome(address));
          if (typeof r === "string" || Buffer.compare(r.data, w.data) !== 0) {
            lost.push(`${address}: ${typeof r === "string" ? r : "other bytes"}`);
          }
        }
        expect(lost, "entries written after the restart that are not readable").toEqual([]);

        // The watch sees the writes made once SERVING again (its listener is back).
        const since = after.filter(([, w]) => w.at >= serving).map(([a]) => a);
        expect(since.length).toBeGreaterThan(0);
        yield* Effect.promise(() =>
          until(
            "the watch shows every write made since SERVING",
            () => since.every((a) => watched.has(a)),
            10_000,
          ).catch((e: unknown) => {
            const unseen = since.filter((a) => !watched.has(a));
            throw new Error(
              `${(e as Error).message}: ${unseen.length} of ${since.length} unseen; stream ends: ${watch.ends.join(", ")}`,
            );
          }),
        );
        expect(watch.ends.filter((s) => s !== "Unavailable")).toEqual([]);
        report("hazelcast", {
          writtenBeforeKill: before.length,
          notFoundAfterRestart: before.length - survived.length,
          writtenAfterRestart: after.length,
          readableAfterRestart: after.length - lost.length,
          watchedSinceServing: since.length,
          watchesOpened: started,
          streamEnds: watch.ends,
        });
        yield* Effect.promise(watch.stop);
        expect(yield* Effect.promise(() => mesh.stop()), "the mesh's exit code on SIGTERM").toBe(0);
      }),
    180_000,
  );
});
