/**
 * Split deployment in one process: node A hosts DataStore (so the registry),
 * node B hosts the other three services and reaches the registry through A.
 * A client that knows only A calls every service; A forwards what it does
 * not host to B, found through the registry. Errors, streams, deadlines,
 * cancellation and trace context cross the hop.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { Chunk, Effect, Option, Stream } from "effect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema } from "../../gen/floworchestrator/common/v1/error_pb.js";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { ServiceStatus } from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
import {
  MemoryManagerService,
  WatchMemoryResponse_Type as WatchType,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { MessageKind } from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import {
  consume,
  MESH_NODE_TYPE,
  MeshClient,
  type MeshClientShape,
} from "../../src/client/index.js";
import { defaultConfig, type MeshConfigShape } from "../../src/config.js";
import { clientFor, failureOf, type ProtocolName, protocolNames } from "../support/clients.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { poll } from "../support/poll.js";

const meshSettings = (over: Partial<MeshConfigShape["mesh"]>): Partial<MeshConfigShape> => ({
  mesh: { ...defaultConfig().mesh, lease: "2 seconds" as never, ...over },
});

const spansOfA = new InMemorySpanExporter();
const spansOfB = new InMemorySpanExporter();
let a: TestMesh;
let b: TestMesh;
/** Runs an effect with a client that knows only node A. */
let viaA: <X, E>(f: (client: MeshClientShape) => Effect.Effect<X, E>) => Promise<X>;

beforeAll(async () => {
  a = await startMesh(meshSettings({ services: ["datastore"], register: Option.some(true) }), {
    spanProcessors: [new SimpleSpanProcessor(spansOfA)],
  });
  b = await startMesh(
    meshSettings({ services: ["memory", "messaging", "telemetry"], seeds: [a.url] }),
    { spanProcessors: [new SimpleSpanProcessor(spansOfB)] },
  );
  viaA = (f) =>
    Effect.runPromise(
      Effect.scoped(
        Effect.flatMap(MeshClient, f).pipe(
          Effect.provide(MeshClient.layer({ seeds: [a.url], discovery: false })),
        ),
      ),
    );
  // B is READY in A's registry, and A's router has seen it (the registry watch polls).
  for (let i = 0; i < 100; i++) {
    const routed = await viaA((c) =>
      Effect.either(c.memory.exists({ address: address("probe") }, { timeout: "1 second" })),
    );
    if (routed._tag === "Right") break;
    await new Promise((r) => setTimeout(r, 100));
  }
});
afterAll(async () => {
  await b?.close();
  await a?.close();
});

const protocolOf = (protocol: ProtocolName) =>
  protocol.startsWith("gRPC-Web") ? "grpc-web" : protocol.startsWith("gRPC") ? "grpc" : "connect";

const address = (execution: string) => ({
  kind: { case: "text" as const, value: `${execution}:flow1:PROCESS:main:step1:json` },
});

describe("a node forwards what it does not host", () => {
  it("lists both nodes in the registry with the services they host", async () => {
    const { services } = await viaA((c) =>
      c.datastore.listServices({ serviceType: MESH_NODE_TYPE }),
    );
    const byUrl = new Map(services.map((s) => [s.endpoints[0], s.capabilities]));
    expect(byUrl.get(a.url)).toEqual(["floworchestrator.datastore.v1.DataStoreService"]);
    expect(byUrl.get(b.url)).toEqual([
      "floworchestrator.memory.v1.MemoryManagerService",
      "floworchestrator.messaging.v1.MessageBusService",
      "floworchestrator.telemetry.v1.TelemetryService",
    ]);
  });

  it("serves every service through A; what was written through A is in B", async () => {
    const execution = `e-${randomUUID().slice(0, 8)}`;
    await viaA((c) =>
      Effect.gen(function* () {
        yield* c.datastore.createEntity({ kind: "flows", id: execution, document: { n: 1 } });
        yield* c.memory.allocate({ address: address(execution), owner: "step1" });
        yield* c.memory.write({
          address: address(execution),
          owner: "step1",
          data: new TextEncoder().encode("{}"),
          contentType: "application/json",
        });
        yield* c.messaging.publishEvent({
          event: { messageType: "FlowStarted", payload: new TextEncoder().encode("{}") },
        });
        const health = yield* c.telemetry.getHealth({});
        expect(health.components.length).toBeGreaterThan(0);
      }),
    );
    const direct = await Effect.runPromise(
      Effect.scoped(
        Effect.flatMap(MeshClient, (c) => c.memory.read({ address: address(execution) })).pipe(
          Effect.provide(MeshClient.layer({ seeds: [b.url], discovery: false })),
        ),
      ),
    );
    expect(new TextDecoder().decode(direct.data)).toBe("{}");
  });

  it("relays Consume: subscribes, delivers and settles through A", async () => {
    const dest = `split-${randomUUID().slice(0, 8)}`;
    const got = await viaA((c) =>
      Effect.scoped(
        Effect.gen(function* () {
          const consumer = yield* consume(c.messaging, { group: dest, destination: dest });
          yield* c.messaging.publishBatch({
            messages: [1, 2, 3].map((i) => ({
              kind: MessageKind.COMMAND,
              messageType: "test.Work",
              destination: dest,
              partitionKey: "k",
              payload: new TextEncoder().encode(String(i)),
            })),
          });
          const batches = yield* consumer.batches.pipe(
            Stream.mapEffect((batch) =>
              Effect.as(consumer.ack(...batch.map((d) => d.deliveryId)), batch),
            ),
            Stream.flattenIterables,
            Stream.take(3),
            Stream.runCollect,
          );
          return Chunk.toArray(batches).map((d) => new TextDecoder().decode(d.message?.payload));
        }),
      ),
    );
    expect(got).toEqual(["1", "2", "3"]);
  });

  it("returns the hosting node's error with its FlowOrchestrator detail", async () => {
    const error = await viaA((c) => Effect.flip(c.memory.read({ address: address("missing") })));
    expect(error._tag).toBe("NotFound");
    expect(error.code).toBe("RESOURCE_ERROR.NOT_FOUND");
    const bad = await viaA((c) =>
      Effect.flip(c.memory.read({ address: { kind: { case: "text", value: "a:b" } } })),
    );
    expect(bad._tag).toBe("InvalidArgument");
    expect(bad._tag === "InvalidArgument" && bad.violations[0]?.field).toBe("address");
  });

  it("forwards server streams", async () => {
    const events = await viaA((c) =>
      c.memory
        .watchMemory({ executionId: "e-stream" })
        .pipe(Stream.take(1), Stream.runCollect, Effect.map(Chunk.toArray)),
    );
    expect(events).toHaveLength(1);
  });

  it("shrinks the deadline across the hop and cancels the work downstream", async () => {
    const error = await viaA((c) =>
      Effect.flip(
        c.messaging.request(
          {
            command: { messageType: "Validate", destination: "nobody" },
            timeout: { seconds: 5n },
          },
          { timeout: "200 millis" },
        ),
      ),
    );
    expect(error._tag).toBe("DeadlineExceeded");
    // B's own handling of the call ended with the deadline, not after its 5 s timeout.
    const spanOfB = () =>
      spansOfB
        .getFinishedSpans()
        .find((s) => s.name === "floworchestrator.messaging.v1.MessageBusService/Request");
    for (let i = 0; i < 50 && spanOfB() === undefined; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(spanOfB()?.attributes["rpc.grpc.status_code"]).toBeOneOf([1, 4]);
  });

  it("continues the caller's trace on the forwarded hop", async () => {
    const traceId = randomBytes(16).toString("hex");
    const traceparent = `00-${traceId}-${randomBytes(8).toString("hex")}-01`;
    await clientFor(MemoryManagerService, "Connect over HTTP/1.1", a.url).exists(
      { address: address("traced") },
      { headers: { traceparent } },
    );
    const name = `${MemoryManagerService.typeName}/Exists`;
    const ofTrace = (spans: InMemorySpanExporter) =>
      spans.getFinishedSpans().find((s) => s.spanContext().traceId === traceId && s.name === name);
    for (let i = 0; i < 50 && ofTrace(spansOfB) === undefined; i++)
      await new Promise((r) => setTimeout(r, 20));
    // A's span of the relayed call is the parent of B's.
    const hop = ofTrace(spansOfA);
    const served = ofTrace(spansOfB);
    expect(hop?.kind).toBe(SpanKind.SERVER);
    expect(hop?.attributes["fo.forwarded_to"]).toBe(b.url);
    expect(served?.kind).toBe(SpanKind.SERVER);
    expect(served?.parentSpanContext?.spanId).toBe(hop?.spanContext().spanId);
  });

  it.each(protocolNames)(
    "relays %s: answers, errors with their detail, streams",
    async (protocol) => {
      const memory = clientFor(MemoryManagerService, protocol, a.url);
      const execution = `e-${randomUUID().slice(0, 8)}`;
      await memory.allocate({ address: address(execution), owner: "step1" });
      await memory.write({
        address: address(execution),
        owner: "step1",
        data: new TextEncoder().encode("{}"),
      });
      expect(
        new TextDecoder().decode((await memory.read({ address: address(execution) })).data),
      ).toBe("{}");
      // Large enough to cross the flow-control windows of both hops, both ways.
      const large = randomBytes(3 * 1024 * 1024);
      await memory.write({ address: address(execution), owner: "step1", data: large });
      const back = (await memory.read({ address: address(execution) })).data;
      expect(Buffer.from(back).equals(large)).toBe(true);
      const missing = await failureOf(memory.read({ address: address(`${execution}-missing`) }));
      expect(missing.code).toBe(Code.NotFound);
      expect(missing.findDetails(ErrorDetailSchema)[0]?.code).toBe("RESOURCE_ERROR.NOT_FOUND");
      // A stream: it opens, what is written then shows up in it, and the caller leaves.
      const abort = new AbortController();
      const events = memory
        .watchMemory({ executionId: execution }, { signal: abort.signal })
        [Symbol.asyncIterator]();
      expect((await events.next()).value?.type).toBe(WatchType.STARTED);
      await memory.write({
        address: address(execution),
        owner: "step1",
        data: new TextEncoder().encode("[]"),
      });
      expect((await events.next()).value?.type).toBe(WatchType.WRITTEN);
      abort.abort();
      // A stream refused at its start ends with the node's error.
      const refused = await failureOf(
        (async () => {
          for await (const _ of memory.watchMemory({ executionId: "bad:id" })) break;
        })(),
      );
      expect(refused.code).toBe(Code.InvalidArgument);
      // A recorded each relayed call with the status code B answered.
      const codes = spansOfA
        .getFinishedSpans()
        .filter(
          (s) =>
            s.attributes["fo.rpc.protocol"] === protocolOf(protocol) &&
            s.attributes["fo.forwarded_to"] === b.url,
        )
        .map((s) => `${s.attributes["rpc.method"]}:${s.attributes["rpc.grpc.status_code"]}`);
      expect(codes).toEqual(expect.arrayContaining(["Read:0", "Read:5", "WatchMemory:3"]));
    },
  );

  it("reports a forwarded service SERVING only while a node hosting it is known", async () => {
    const health = (url: string, service: string) =>
      clientFor(Health, "gRPC (h2c)", url)
        .check({ service })
        .then((r) => HealthCheckResponse_ServingStatus[r.status]);
    // Health checks run every 2 s: A may not have checked since B joined.
    await poll("MemoryManager SERVING on A", async () =>
      (await health(a.url, MemoryManagerService.typeName)) === "SERVING" ? true : undefined,
    );
    // A node alone, without seeds: nowhere to send MemoryManager calls. (Last: a mesh started in
    // this process takes over the grpc-js instrumentation's tracer provider.)
    const lone = await startMesh(meshSettings({ services: ["datastore"] }));
    try {
      expect(await health(lone.url, DataStoreService.typeName)).toBe("SERVING");
      expect(await health(lone.url, MemoryManagerService.typeName)).toBe("NOT_SERVING");
    } finally {
      await lone.close();
    }
  });

  it("registers a node READY at start and TERMINATED when it shuts down", async () => {
    const c = await startMesh(meshSettings({ services: ["telemetry"], seeds: [a.url] }));
    const record = () =>
      viaA((client) => client.datastore.listServices({ serviceType: MESH_NODE_TYPE })).then((r) =>
        r.services.find((s) => s.endpoints[0] === c.url),
      );
    await poll("C READY", async () =>
      (await record())?.status === ServiceStatus.READY ? true : undefined,
    );
    await c.close();
    expect((await record())?.status).toBe(ServiceStatus.TERMINATED);
  });
});
