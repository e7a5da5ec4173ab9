/**
 * The mesh as separate processes sharing the real backends: A hosts
 * DataStore and MemoryManager, B hosts MessageBus and Telemetry, C hosts
 * all four. A client that knows only A calls every service; A forwards what
 * it does not host to B or C, found through the service registry, and the
 * trace shows every hop under the caller's trace id in Jaeger. A deadline
 * shrinks across the hop and cancels the work downstream. Killing C
 * (SIGKILL) under load loses no call, and C leaves the registry after its
 * lease.
 */
import { randomBytes } from "node:crypto";
import { Effect, ManagedRuntime } from "effect";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import {
  ServiceHealth,
  ServiceStatus,
} from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
import {
  MESH_NODE_TYPE,
  MeshClient,
  type MeshClientShape,
  type MeshError,
} from "../../src/client/index.js";
import type { InfraAddresses } from "../infra/index.js";
import { poll } from "../support/poll.js";
import { type MeshProcess, spawnMesh } from "../support/process.js";

const infra: InfraAddresses = inject("infra");
const run = randomBytes(4).toString("hex");
const names = { a: `node-a-${run}`, b: `node-b-${run}`, c: `node-c-${run}` };

const shared = {
  FO_MONGODB_URI: infra.mongodbUri,
  FO_MONGODB_DATABASE: `nodes_${run}`,
  FO_WATCH_POLL_INTERVAL: "100 millis",
  FO_HAZELCAST_MEMBERS: infra.hazelcastMembers.join(","),
  FO_HAZELCAST_CLUSTER: "dev",
  FO_KAFKA_BROKERS: infra.kafkaBrokers.join(","),
  FO_BUS_TOPIC_PREFIX: `nodes-${run}.`,
  FO_MESH_LEASE: "2 seconds",
  OTEL_EXPORTER_OTLP_ENDPOINT: infra.jaeger.otlpHttp,
};

let a: MeshProcess;
let b: MeshProcess;
let c: MeshProcess;
let runtime: ManagedRuntime.ManagedRuntime<MeshClient, never>;
let client: MeshClientShape;

const call = <X, E extends MeshError>(effect: Effect.Effect<X, E>) => Effect.runPromise(effect);

const nodesInRegistry = () =>
  call(client.datastore.listServices({ serviceType: MESH_NODE_TYPE })).then((r) => r.services);

beforeAll(async () => {
  a = await spawnMesh({
    ...shared,
    FO_SERVICES: "datastore,memory",
    FO_MESH_REGISTER: "true",
    OTEL_SERVICE_NAME: names.a,
  });
  [b, c] = await Promise.all([
    spawnMesh({
      ...shared,
      FO_SERVICES: "messaging,telemetry",
      FO_MESH_SEEDS: a.url,
      OTEL_SERVICE_NAME: names.b,
    }),
    spawnMesh({ ...shared, FO_MESH_SEEDS: a.url, OTEL_SERVICE_NAME: names.c }),
  ]);
  // The client knows only A, and does not follow the registry itself: A routes.
  runtime = ManagedRuntime.make(MeshClient.layer({ seeds: [a.url], discovery: false }));
  client = await runtime.runPromise(MeshClient);
  await poll("three READY nodes in the registry", async () => {
    const nodes = await nodesInRegistry();
    return nodes.filter((n) => n.status === ServiceStatus.READY).length === 3 ? nodes : undefined;
  });
  // A's router follows the registry through a watch polling every 100 ms here: give it ten polls
  // to see B and C both, so round-robin reaches each of them.
  await new Promise((r) => setTimeout(r, 1_000));
});

afterAll(async () => {
  await runtime?.dispose();
  for (const p of [a, b, c]) if (p && p.child.exitCode === null) p.child.kill("SIGTERM");
  await Promise.all([a?.exited, b?.exited, c?.exited]);
});

describe("three mesh processes on shared backends", () => {
  it("a client of A alone calls every service, and Jaeger shows the hops under one trace", async () => {
    const traceId = randomBytes(16).toString("hex");
    const headers = { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01` };
    const address = {
      kind: { case: "text" as const, value: `E-${run}:flow:PROCESS:main:s1:json` },
    };
    await call(
      Effect.gen(function* () {
        yield* client.datastore.createEntity({ kind: "flows", document: { n: 1 } }, { headers });
        yield* client.memory.allocate({ address, owner: "s1" }, { headers });
        // Round-robin over B and C: two calls each reach both.
        for (let i = 0; i < 2; i++) {
          yield* client.messaging.publishEvent(
            { event: { messageType: "FlowStarted", payload: new TextEncoder().encode("{}") } },
            { headers },
          );
          yield* client.telemetry.getHealth({}, { headers });
        }
      }),
    );
    const publish = "floworchestrator.messaging.v1.MessageBusService/PublishEvent";
    type Trace = {
      spans: {
        spanID: string;
        operationName: string;
        processID: string;
        references: { refType: string; spanID: string }[];
      }[];
      processes: Record<string, { serviceName: string }>;
    };
    const trace = await poll("the trace with all three nodes in Jaeger", async () => {
      const res = await fetch(`${infra.jaeger.query}/api/traces/${traceId}`);
      if (!res.ok) return undefined;
      const [found] = ((await res.json()) as { data: Trace[] }).data;
      const services = new Set(Object.values(found?.processes ?? {}).map((p) => p.serviceName));
      const served = found?.spans.filter((s) => s.operationName === publish).length ?? 0;
      // Spans arrive in batches per process: wait for all four servings of the two publishes.
      return [names.a, names.b, names.c].every((n) => services.has(n)) && served === 4
        ? found
        : undefined;
    });
    const serviceOf = (processID: string) => trace.processes[processID]?.serviceName;
    const ops = trace.spans.map((s) => `${serviceOf(s.processID)} ${s.operationName}`);
    // A relayed each publish (its span), and B or C served it (theirs, children of A's).
    expect(ops).toContain(`${names.a} ${publish}`);
    expect(ops.filter((o) => o.endsWith(` ${publish}`)).length).toBe(4);
    const spanOf = new Map(trace.spans.map((s) => [s.spanID, s]));
    for (const span of trace.spans.filter(
      (s) => s.operationName === publish && serviceOf(s.processID) !== names.a,
    )) {
      const parent = spanOf.get(
        span.references.find((r) => r.refType === "CHILD_OF")?.spanID ?? "",
      );
      expect(parent && serviceOf(parent.processID)).toBe(names.a);
    }
  });

  it("a 200 ms deadline ends in DEADLINE_EXCEEDED at the caller and cancels the work downstream", async () => {
    const traceId = randomBytes(16).toString("hex");
    const traceparent = `00-${traceId}-${randomBytes(8).toString("hex")}-01`;
    const error = await Effect.runPromise(
      Effect.flip(
        client.messaging.request(
          {
            command: { messageType: "Validate", destination: `nobody-${run}` },
            timeout: { seconds: 10n },
          },
          { timeout: "200 millis", headers: { traceparent } },
        ),
      ),
    );
    expect(error._tag).toBe("DeadlineExceeded");
    // The node that served the forwarded Request ended it with the deadline, not its 10 s timeout.
    type Span = { operationName: string; duration: number; processID: string };
    const downstream = await poll("the downstream Request span in Jaeger", async () => {
      const res = await fetch(`${infra.jaeger.query}/api/traces/${traceId}`);
      const body = (await res.json()) as { data: { spans: Span[] }[] };
      const spans = body.data[0]?.spans.filter(
        (s) => s.operationName === "floworchestrator.messaging.v1.MessageBusService/Request",
      );
      return spans?.length === 2 ? spans : undefined;
    });
    for (const span of downstream) expect(span.duration / 1000).toBeLessThan(1_000);
  });

  it("keeps serving through B when C is killed, and C leaves the registry after its lease", async () => {
    const failures: string[] = [];
    let calls = 0;
    const load = (async () => {
      const until = Date.now() + 5_000;
      while (Date.now() < until) {
        const result = await Effect.runPromise(
          Effect.either(client.telemetry.getHealth({}, { timeout: "3 seconds" })),
        );
        calls++;
        if (result._tag === "Left") failures.push(`${result.left._tag}: ${result.left.message}`);
      }
    })();
    await new Promise((r) => setTimeout(r, 1_000));
    c.child.kill("SIGKILL");
    await load;
    expect(calls).toBeGreaterThan(20);
    expect(failures).toEqual([]);
    const expired = await poll("C reported EXPIRED", async () => {
      const nodes = await nodesInRegistry();
      const record = nodes.find((n) => n.endpoints[0] === c.url);
      return record?.health === ServiceHealth.EXPIRED ? record : undefined;
    });
    expect(expired.endpoints).toEqual([c.url]);
  });
});
