/**
 * The client's router: round-robin over the live nodes hosting a service as
 * the registry watch shows them; expired, terminated and deregistered nodes
 * out; a node that failed sits out its cooldown; seeds when the registry
 * knows no host; a fresh snapshot drops nodes that vanished meanwhile.
 */
import { create } from "@bufbuild/protobuf";
import { Duration, Effect, Exit, Stream } from "effect";
import { afterEach, describe, expect, it } from "vitest";
import { WatchServicesResponseSchema } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import {
  ServiceEvent_Type as EventType,
  ServiceHealth,
  ServiceStatus,
} from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
import { MESH_NODE_TYPE, makeRouter, type RegistryRouter } from "../../src/client/router.js";

const MEMORY = "floworchestrator.memory.v1.MemoryManagerService";
const BUS = "floworchestrator.messaging.v1.MessageBusService";

const event = (
  type: EventType,
  id: string,
  options: {
    url?: string;
    services?: string[];
    status?: ServiceStatus;
    health?: ServiceHealth;
  } = {},
) =>
  create(WatchServicesResponseSchema, {
    event: {
      type,
      service: {
        serviceId: id,
        version: "0.1.0",
        serviceType: MESH_NODE_TYPE,
        endpoints: [options.url ?? `http://${id}:8080`],
        capabilities: options.services ?? [MEMORY],
        status: options.status ?? ServiceStatus.READY,
        health: options.health ?? ServiceHealth.HEALTHY,
      },
    },
  });

let router: RegistryRouter;
const make = (seeds: string[] = [], cooldown = Duration.seconds(5)) => {
  router = makeRouter({ kind: "connect", seeds, cooldown });
  return router;
};
afterEach(() => router?.close());

const pick = (service: string) =>
  Effect.runPromiseExit(router.pick(service)).then((exit) =>
    Exit.isSuccess(exit) ? exit.value.url : `failed: ${String(Exit.isFailure(exit) && exit.cause)}`,
  );
const picks = async (service: string, n: number) => {
  const urls: string[] = [];
  for (let i = 0; i < n; i++) urls.push(await pick(service));
  return urls;
};

describe("router", () => {
  it("balances round-robin over the live nodes hosting the service", async () => {
    const r = make();
    r.apply(event(EventType.SNAPSHOT, "a"));
    r.apply(event(EventType.SNAPSHOT, "b"));
    r.apply(event(EventType.SNAPSHOT, "c", { services: [BUS] }));
    expect(await picks(MEMORY, 4)).toEqual([
      "http://a:8080",
      "http://b:8080",
      "http://a:8080",
      "http://b:8080",
    ]);
    expect(await picks(BUS, 2)).toEqual(["http://c:8080", "http://c:8080"]);
  });

  it("takes out expired, not-READY and deregistered nodes, and brings renewed ones back", async () => {
    const r = make();
    r.apply(event(EventType.SNAPSHOT, "a"));
    r.apply(event(EventType.SNAPSHOT, "b"));
    r.apply(event(EventType.EXPIRED, "a"));
    expect(r.live(MEMORY)).toEqual(["http://b:8080"]);
    r.apply(event(EventType.STATUS_CHANGED, "b", { status: ServiceStatus.TERMINATED }));
    expect(r.live(MEMORY)).toEqual([]);
    expect(await pick(MEMORY)).toContain("no live mesh node hosts");
    r.apply(event(EventType.RENEWED, "a"));
    expect(r.live(MEMORY)).toEqual(["http://a:8080"]);
    r.apply(event(EventType.DEREGISTERED, "a"));
    expect(r.live(MEMORY)).toEqual([]);
  });

  it("leaves a failed node out for its cooldown, unless nothing else is left", async () => {
    const r = make([], Duration.millis(200));
    r.apply(event(EventType.SNAPSHOT, "a"));
    r.apply(event(EventType.SNAPSHOT, "b"));
    const first = await Effect.runPromise(r.pick(MEMORY));
    await Effect.runPromise(r.failed(first));
    expect(await picks(MEMORY, 3)).toEqual(["http://b:8080", "http://b:8080", "http://b:8080"]);
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(new Set(await picks(MEMORY, 2))).toEqual(new Set(["http://a:8080", "http://b:8080"]));
    // Both down: trying one again beats failing without a try.
    for (const url of ["http://a:8080", "http://b:8080"]) {
      await Effect.runPromise(r.failed({ url } as never));
    }
    expect(["http://a:8080", "http://b:8080"]).toContain(await pick(MEMORY));
  });

  it("uses the seeds while the registry knows no host, never this node itself", async () => {
    router = makeRouter({
      kind: "connect",
      seeds: ["http://seed-1:8080/", "http://self:8080"],
      self: "http://self:8080",
      cooldown: Duration.seconds(5),
    });
    expect(await picks(MEMORY, 2)).toEqual(["http://seed-1:8080", "http://seed-1:8080"]);
    router.apply(event(EventType.SNAPSHOT, "a"));
    router.apply(event(EventType.SNAPSHOT, "self", { url: "http://self:8080" }));
    expect(await picks(MEMORY, 2)).toEqual(["http://a:8080", "http://a:8080"]);
  });

  it("drops nodes missing from a new snapshot (they went away while the watch was down)", async () => {
    const r = make();
    r.apply(event(EventType.SNAPSHOT, "a"));
    r.apply(event(EventType.SNAPSHOT, "b"));
    expect(r.live(MEMORY)).toHaveLength(2);
    const complete = create(WatchServicesResponseSchema, {
      event: { type: EventType.SNAPSHOT_COMPLETE },
    });
    // A (re)connected watch: only b is still registered.
    await Effect.runPromise(
      Effect.scoped(
        Effect.zipRight(
          r.follow(Stream.make(event(EventType.SNAPSHOT, "b"), complete)),
          Effect.sleep("50 millis"),
        ),
      ),
    );
    expect(r.live(MEMORY)).toEqual(["http://b:8080"]);
  });
});
