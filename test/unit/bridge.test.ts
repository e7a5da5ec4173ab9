/** Tier 1: the Effect↔Connect bridge and error interceptor over an in-memory router transport. */
import { Code, createClient, createRouterTransport, type ServiceImpl } from "@connectrpc/connect";
import { Context, Effect, Layer, Logger, ManagedRuntime, type Runtime, Stream } from "effect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema } from "../../gen/floworchestrator/common/v1/error_pb.js";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.js";
import { NotFound } from "../../src/common/errors.js";
import { type Bridge, makeBridge, makeDefectReporter } from "../../src/server/bridge.js";
import { errorInterceptor } from "../../src/server/interceptors.js";
import { servePort } from "../../src/server/port-rpc.js";
import { failureOf } from "../support/clients.js";

const logs: string[] = [];
/** Log lines kept in `logs`. */
const capturingLogger = Logger.replace(
  Logger.defaultLogger,
  Logger.make(({ message, annotations }) => logs.push(JSON.stringify({ message, annotations }))),
);
const managed = ManagedRuntime.make(capturingLogger);
let runtime: Runtime.Runtime<never>;
beforeAll(async () => {
  runtime = await managed.runtime();
});
afterAll(() => managed.dispose());

type TestBridge = Bridge<never>;

/** A Health service whose handlers are whatever the test needs. */
const setup = (impl: (bridge: TestBridge) => Partial<ServiceImpl<typeof Health>>) => {
  const shutdown = new AbortController();
  const bridge = makeBridge(runtime, shutdown.signal);
  const transport = createRouterTransport((router) => router.service(Health, impl(bridge)), {
    router: { interceptors: [errorInterceptor(makeDefectReporter(runtime))] },
  });
  return { client: createClient(Health, transport), shutdown };
};

describe("bridge", () => {
  it("returns the effect's value", async () => {
    const { client } = setup((b) => ({
      check: (_req, ctx) => b.unary(ctx, Effect.succeed({ status: Status.SERVING })),
    }));
    expect((await client.check({})).status).toBe(Status.SERVING);
  });

  it("maps a typed failure through the error table", async () => {
    const { client } = setup((b) => ({
      check: (_req, ctx) => b.unary(ctx, Effect.fail(new NotFound({ message: "no such thing" }))),
    }));
    const err = await failureOf(client.check({}));
    expect(err.code).toBe(Code.NotFound);
    expect(err.rawMessage).toBe("no such thing");
    expect(err.findDetails(ErrorDetailSchema)[0]?.code).toBe("RESOURCE_ERROR.NOT_FOUND");
  });

  it("turns a defect into INTERNAL with an error id that is logged, leaking nothing", async () => {
    const { client } = setup((b) => ({
      check: (_req, ctx) => b.unary(ctx, Effect.die(new Error("pool exhausted at 10.1.2.3:27017"))),
    }));
    const err = await failureOf(client.check({}));
    expect(err.code).toBe(Code.Internal);
    expect(err.message).not.toContain("10.1.2.3");
    const errorId = err.findDetails(ErrorDetailSchema)[0]?.errorId ?? "";
    expect(errorId).toMatch(/^[0-9a-f-]{36}$/);
    expect(err.rawMessage).toContain(errorId);
    expect(logs.some((l) => l.includes(errorId) && l.includes("grpc.health.v1.Health/Check"))).toBe(
      true,
    );
  });

  it("turns a raw throw outside the bridge into INTERNAL too", async () => {
    const { client } = setup(() => ({
      check: async () => {
        throw new Error("secret stack");
      },
    }));
    const err = await failureOf(client.check({}));
    expect(err.code).toBe(Code.Internal);
    expect(err.message).not.toContain("secret");
    expect(err.findDetails(ErrorDetailSchema)[0]?.errorId).toBeTruthy();
  });

  it("enforces the client's deadline and interrupts the handler's work", async () => {
    let interrupted = false;
    const { client } = setup((b) => ({
      check: (_req, ctx) =>
        b.unary(
          ctx,
          Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))),
        ),
    }));
    const err = await failureOf(client.check({}, { timeoutMs: 100 }));
    expect(err.code).toBe(Code.DeadlineExceeded);
    await new Promise((r) => setTimeout(r, 20));
    expect(interrupted).toBe(true);
  });

  it("ends an open stream cleanly when the server shuts down", async () => {
    const { client, shutdown } = setup((b) => ({
      watch: (_req, ctx) =>
        b.stream(ctx, Stream.concat(Stream.make({ status: Status.SERVING }), Stream.never)),
    }));
    const seen: Status[] = [];
    for await (const res of client.watch({})) {
      seen.push(res.status);
      shutdown.abort();
    }
    expect(seen).toEqual([Status.SERVING]);
  });

  it("fails a stream with the mapped code", async () => {
    const { client } = setup((b) => ({
      watch: (_req, ctx) =>
        b.stream(
          ctx,
          Stream.concat(
            Stream.make({ status: Status.SERVING }),
            Stream.fail(new NotFound({ message: "gone" })),
          ),
        ),
    }));
    const seen: Status[] = [];
    const err = await failureOf(
      (async () => {
        for await (const res of client.watch({})) seen.push(res.status);
      })(),
    );
    expect(seen).toEqual([Status.SERVING]);
    expect(err.code).toBe(Code.NotFound);
  });
});

describe("servePort", () => {
  class CheckPort extends Context.Tag("test/CheckPort")<
    CheckPort,
    { readonly check: (req: { service: string }) => Effect.Effect<{ status: Status }> }
  >() {}

  /** Health served by `servePort` over a port the application's runtime holds. */
  const served = async (check: (req: { service: string }) => Effect.Effect<{ status: Status }>) => {
    const app = ManagedRuntime.make(
      Layer.merge(Layer.succeed(CheckPort, { check }), capturingLogger),
    );
    const rt = await app.runtime();
    const bridge = makeBridge(rt, new AbortController().signal);
    const transport = createRouterTransport(
      (router) => router.service(Health, servePort(Health, CheckPort, bridge)),
      { router: { interceptors: [errorInterceptor(makeDefectReporter(rt))] } },
    );
    return { client: createClient(Health, transport), dispose: () => app.dispose() };
  };

  it("calls the port the runtime holds, per request", async () => {
    const { client, dispose } = await served(({ service }) =>
      Effect.succeed({ status: service === "up" ? Status.SERVING : Status.NOT_SERVING }),
    );
    expect((await client.check({ service: "up" })).status).toBe(Status.SERVING);
    expect((await client.check({ service: "down" })).status).toBe(Status.NOT_SERVING);
    await dispose();
  });

  it("turns a port that throws while building its effect into INTERNAL, logged", async () => {
    const { client, dispose } = await served(() => {
      throw new Error("built wrong at 10.9.8.7");
    });
    const err = await failureOf(client.check({}));
    expect(err.code).toBe(Code.Internal);
    expect(err.message).not.toContain("10.9.8.7");
    const errorId = err.findDetails(ErrorDetailSchema)[0]?.errorId ?? "";
    expect(errorId).toMatch(/^[0-9a-f-]{36}$/);
    expect(logs.some((l) => l.includes(errorId) && l.includes("Health/Check"))).toBe(true);
    await dispose();
  });
});
