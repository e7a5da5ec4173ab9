/**
 * The typed Effect client against a real mesh, over both of its transports:
 * unary calls, server streams, the services' tagged errors with their
 * FlowOrchestrator detail, per-call deadlines, and retries on UNAVAILABLE
 * only where the proto says a method is safe to repeat.
 */
import { Chunk, Effect, Stream } from "effect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  MeshClient,
  type MeshClientOptions,
  type MeshClientShape,
} from "../../src/client/index.js";
import { freePort } from "../infra/process.js";
import { startMesh, type TestMesh } from "../support/mesh.js";

let mesh: TestMesh;
/** A loopback port nothing listens on: calls to it fail with UNAVAILABLE. */
let deadUrl: string;
beforeAll(async () => {
  mesh = await startMesh();
  deadUrl = `http://127.0.0.1:${await freePort()}`;
});
afterAll(() => mesh.close());

const withClient = <X, E>(
  options: Partial<MeshClientOptions>,
  f: (client: MeshClientShape) => Effect.Effect<X, E>,
) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.flatMap(MeshClient, f).pipe(
        Effect.provide(MeshClient.layer({ seeds: [mesh.url], discovery: false, ...options })),
      ),
    ),
  );

describe.each(["grpc", "connect"] as const)("over %s", (transport) => {
  it("creates and reads an entity, and watches the registry", async () => {
    const result = await withClient({ transport }, (c) =>
      Effect.gen(function* () {
        const { entity } = yield* c.datastore.createEntity({
          kind: "flows",
          id: `client-${transport}`,
          document: { name: "orders" },
        });
        const read = yield* c.datastore.getEntity({ kind: "flows", id: `client-${transport}` });
        const events = yield* c.datastore
          .watchServices({})
          .pipe(Stream.take(1), Stream.runCollect, Effect.map(Chunk.toArray));
        return { created: entity?.version, read: read.entity?.document, events: events.length };
      }),
    );
    expect(result).toEqual({ created: 1n, read: { name: "orders" }, events: 1 });
  });

  it("fails with the service's tagged error and its detail", async () => {
    const error = await withClient({ transport }, (c) =>
      Effect.flip(c.datastore.getEntity({ kind: "flows", id: "missing" })),
    );
    expect(error._tag).toBe("NotFound");
    expect(error.code).toBe("RESOURCE_ERROR.NOT_FOUND");
    expect(error.metadata).toMatchObject({ kind: "flows" });
    const invalid = await withClient({ transport }, (c) =>
      Effect.flip(c.datastore.getEntity({ kind: "$where", id: "x" })),
    );
    expect(invalid._tag === "InvalidArgument" && invalid.violations.map((v) => v.field)).toEqual([
      "kind",
    ]);
  });

  it("gives up at the call's deadline with DEADLINE_EXCEEDED", async () => {
    const error = await withClient({ transport }, (c) =>
      Effect.flip(
        c.messaging.request(
          { command: { messageType: "Validate", destination: "nobody" }, timeout: { seconds: 5n } },
          { timeout: "150 millis" },
        ),
      ),
    );
    expect(error._tag).toBe("DeadlineExceeded");
  });

  it("retries a read on the next node after UNAVAILABLE, never a create", async () => {
    // Round-robin starts with the dead seed.
    const read = await withClient({ transport, seeds: [deadUrl, mesh.url] }, (c) =>
      Effect.either(c.datastore.listEntities({ kind: "flows" })),
    );
    expect(read._tag).toBe("Right");
    const create = await withClient({ transport, seeds: [deadUrl, mesh.url] }, (c) =>
      Effect.flip(c.datastore.createEntity({ kind: "flows", document: {} })),
    );
    expect(create._tag).toBe("Unavailable");
  });
});
