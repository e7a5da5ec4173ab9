/**
 * Command-line tools that users and Kubernetes point at the mesh, built from
 * their Go modules at pinned versions (test/interop/go-tools.ts): grpcurl
 * and `buf curl` through server reflection alone (no proto files), and
 * grpc-health-probe as a probe would run it. test/e2e/cli.test.ts covers
 * `buf curl` listing services, Health and DataStore; this file adds the
 * other services.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { setHealth, startMesh, type TestMesh } from "../support/mesh.js";
import { ensureGoTool, exec, goTools, outputTail } from "./go-tools.js";

const DS = "floworchestrator.datastore.v1.DataStoreService";
const MM = "floworchestrator.memory.v1.MemoryManagerService";
const MB = "floworchestrator.messaging.v1.MessageBusService";
const TS = "floworchestrator.telemetry.v1.TelemetryService";

let mesh: TestMesh | undefined;
let grpcurl = "";
let probe = "";
let provisionMs = 0;
let built = true;
let setupFailure: Error | undefined;

/** Fails the calling test with why setup failed: under CI nothing may pass as skipped. */
const ready = (): TestMesh => {
  if (setupFailure) throw setupFailure;
  if (mesh === undefined) throw new Error("no mesh");
  return mesh;
};

beforeAll(async () => {
  try {
    const started = Date.now();
    const tools = [
      await ensureGoTool(goTools.grpcurl),
      await ensureGoTool(goTools.grpcHealthProbe),
    ];
    provisionMs = Date.now() - started;
    built = tools.some((t) => t.built);
    [grpcurl, probe] = tools.map((t) => t.binary) as [string, string];
    mesh = await startMesh();
  } catch (e) {
    setupFailure = e instanceof Error ? e : new Error(String(e));
  }
});
afterAll(() => mesh?.close());

/** grpcurl prints one JSON document per message (errors to stderr), each starting on its own line. */
const documents = (text: string): unknown[] =>
  text
    .trim()
    .split(/\n(?=\{)/)
    .filter((d) => d !== "")
    .map((d) => JSON.parse(d) as unknown);

const address = (m: TestMesh) => `127.0.0.1:${m.port}`;

describe.each([
  ["the one port", "", (m: TestMesh) => `127.0.0.1:${m.port}`],
  ["the native gRPC port", "-native", (m: TestMesh) => new URL(m.grpcUrl as string).host],
] as const)("grpcurl (reflection only, -plaintext) on %s", (_, tag, target) => {
  const call = async (method: string, body: object, extra: string[] = []) =>
    exec(grpcurl, ["-plaintext", ...extra, "-d", JSON.stringify(body), target(ready()), method]);
  const ok = async (method: string, body: object): Promise<unknown> => {
    const out = await call(method, body);
    expect(out.code, outputTail(out)).toBe(0);
    return documents(out.stdout)[0];
  };

  it("lists every service", async () => {
    const out = await exec(grpcurl, ["-plaintext", target(ready()), "list"]);
    expect(out.code, outputTail(out)).toBe(0);
    expect(out.stdout.trim().split("\n").sort()).toEqual([
      DS,
      MM,
      MB,
      TS,
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
    ]);
  });

  it("describes a method through reflection", async () => {
    const out = await exec(grpcurl, ["-plaintext", target(ready()), "describe", `${MM}.Read`]);
    expect(out.code, outputTail(out)).toBe(0);
    expect(out.stdout).toContain(
      "rpc Read ( .floworchestrator.memory.v1.ReadRequest ) returns ( .floworchestrator.memory.v1.ReadResponse )",
    );
  });

  it("DataStore: CreateEntity and GetEntity", async () => {
    await ok(`${DS}/CreateEntity`, {
      kind: "flow",
      id: `grpcurl-1${tag}`,
      document: { name: "Import orders", steps: 3 },
    });
    expect(await ok(`${DS}/GetEntity`, { kind: "flow", id: `grpcurl-1${tag}` })).toMatchObject({
      entity: { kind: "flow", id: `grpcurl-1${tag}`, version: "1", document: { steps: 3 } },
    });
  });

  it("MemoryManager: Allocate, Write and Read (bytes as base64 JSON)", async () => {
    const addr = { text: `EXEC-GRPCURL${tag}:FLOW-1:PROCESS:main:1:Result` };
    await ok(`${MM}/Allocate`, { address: addr, owner: "grpcurl", ttl: "600s" });
    const data = Buffer.from('{"rows":3}').toString("base64");
    await ok(`${MM}/Write`, { address: addr, owner: "grpcurl", data });
    expect(await ok(`${MM}/Read`, { address: addr })).toMatchObject({ data });
  });

  it("MessageBus: PublishEvent, then Subscribe streams subscribed and the delivery", async () => {
    const event = {
      messageId: `grpcurl-evt-1${tag}`,
      messageType: `GrpcurlEvent${tag}`,
      payload: "e30=",
    };
    expect(await ok(`${MB}/PublishEvent`, { event })).toMatchObject({
      receipt: { messageId: `grpcurl-evt-1${tag}` },
    });
    // The stream stays open: grpcurl's own deadline ends it (exit 64 + DEADLINE_EXCEEDED).
    const out = await call(
      `${MB}/Subscribe`,
      { group: `grpcurl${tag}`, eventTypes: [`GrpcurlEvent${tag}`] },
      ["-max-time", "5"],
    );
    expect(out.code, outputTail(out)).toBe(64 + 4);
    const [subscribed, delivery, ...rest] = documents(out.stdout);
    expect(subscribed).toMatchObject({ subscribed: { topics: expect.any(Array) } });
    expect(delivery).toMatchObject({
      delivery: { attempt: 1, message: { messageId: `grpcurl-evt-1${tag}`, payload: "e30=" } },
    });
    expect(rest).toEqual([]);
  });

  it("Telemetry: RecordMetrics and GetHealth", async () => {
    expect(
      await ok(`${TS}/RecordMetrics`, {
        points: [{ name: "grpcurl.calls", kind: "METRIC_KIND_COUNTER", value: 1 }],
      }),
    ).toEqual({ recordedCount: 1 });
    expect(await ok(`${TS}/GetHealth`, {})).toMatchObject({ status: "SERVING_STATUS_SERVING" });
  });

  it("an error: the status code in the exit code and the ErrorDetail's type", async () => {
    const out = await call(`${DS}/GetEntity`, { kind: "flow", id: "grpcurl-missing" }, [
      "-format-error",
    ]);
    expect(out.code, outputTail(out)).toBe(64 + 5);
    const status = documents(out.stderr)[0] as { code: number; details: { "@type": string }[] };
    expect(status.code).toBe(5);
    expect(status.details.map((d) => d["@type"])).toEqual([
      "type.googleapis.com/floworchestrator.common.v1.ErrorDetail",
    ]);
  });
});

describe("buf curl (reflection only)", () => {
  const buf = "node_modules/.bin/buf";
  const call = async (method: string, body: object, protocol = "grpc"): Promise<unknown> => {
    const out = await exec(buf, [
      "curl",
      `--protocol=${protocol}`,
      "--http2-prior-knowledge",
      "-d",
      JSON.stringify(body),
      `${ready().url}/${method}`,
    ]);
    expect(out.code, outputTail(out)).toBe(0);
    return JSON.parse(out.stdout);
  };

  it("MemoryManager: TryLock, then a second holder is refused", async () => {
    const resource = { name: "buf-curl-lock" };
    const first = await call(`${MM}/TryLock`, { resource, holder: "a", lease: "30s" });
    const second = await call(`${MM}/TryLock`, { resource, holder: "b", lease: "30s" }, "connect");
    expect(first).toMatchObject({ acquired: true });
    expect((second as { acquired?: boolean }).acquired ?? false).toBe(false);
  });

  it("MessageBus: PublishEvent, and the same id again is a duplicate", async () => {
    const event = { messageId: "buf-curl-evt-1", messageType: "BufCurlEvent" };
    expect(await call(`${MB}/PublishEvent`, { event })).toMatchObject({
      receipt: { messageId: "buf-curl-evt-1" },
    });
    expect(await call(`${MB}/PublishEvent`, { event }, "grpcweb")).toMatchObject({
      receipt: { messageId: "buf-curl-evt-1", duplicate: true },
    });
  });

  it("Telemetry: RecordMetrics and GetHealth", async () => {
    expect(
      await call(`${TS}/RecordMetrics`, {
        points: [{ name: "buf.curl.calls", kind: "METRIC_KIND_GAUGE", value: 2 }],
      }),
    ).toEqual({ recordedCount: 1 });
    expect(await call(`${TS}/GetHealth`, {}, "connect")).toMatchObject({
      status: "SERVING_STATUS_SERVING",
    });
  });
});

describe("grpc-health-probe (as a Kubernetes probe runs it)", () => {
  const check = (...args: string[]) =>
    exec(probe, [`-addr=${address(ready())}`, "-connect-timeout=5s", "-rpc-timeout=5s", ...args]);

  it("SERVING for the whole server, exit 0", async () => {
    const out = await check();
    expect(out.code, outputTail(out)).toBe(0);
    expect(out.stderr.trim()).toBe("status: SERVING");
  });

  it("SERVING for a named service, exit 0", async () => {
    const out = await check(`-service=${DS}`);
    expect(out.code, outputTail(out)).toBe(0);
    expect(out.stderr.trim()).toBe("status: SERVING");
  });

  it("a non-zero exit while a component is NOT_SERVING, 0 again once it recovers", async () => {
    const m = ready();
    const component = "interop.cli-tools.probe";
    await setHealth(m, component, "NOT_SERVING");
    try {
      const overall = await check();
      const named = await check(`-service=${component}`);
      // grpc-health-probe: exit 4 means the server answered, and not SERVING.
      expect(overall.code, outputTail(overall)).toBe(4);
      expect(outputTail(overall)).toContain("NOT_SERVING");
      expect(named.code, outputTail(named)).toBe(4);
    } finally {
      await setHealth(m, component, "SERVING");
    }
    const recovered = await check();
    expect(recovered.code, outputTail(recovered)).toBe(0);
  });
});

describe("provisioning", () => {
  it("reuses the built tools quickly", () => {
    ready();
    const slowReuse = !built && provisionMs >= 5_000;
    expect(slowReuse, `reusing grpcurl and grpc-health-probe took ${provisionMs} ms`).toBe(false);
  });
});
