/** Tier 3: command-line tools, through reflection alone (no local protos). */
import { execFile, spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { setHealth, startMesh, type TestMesh } from "../support/mesh.js";

const run = promisify(execFile);
const buf = "node_modules/.bin/buf";

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh();
});
afterAll(() => mesh.close());

const services = [
  "floworchestrator.datastore.v1.DataStoreService",
  "floworchestrator.memory.v1.MemoryManagerService",
  "floworchestrator.messaging.v1.MessageBusService",
  "floworchestrator.telemetry.v1.TelemetryService",
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];

describe("buf curl", () => {
  it.each([
    ["grpc-v1", "--http2-prior-knowledge"],
    ["grpc-v1alpha", "--http2-prior-knowledge"],
    ["grpc-v1", "--protocol=connect"], // reflection is bidi: buf needs HTTP/2 for it either way
  ])("lists services through reflection (%s, %s)", async (reflect, flag) => {
    const { stdout } = await run(buf, [
      "curl",
      "--list-services",
      "--http2-prior-knowledge",
      `--reflect-protocol=${reflect}`,
      flag,
      mesh.url,
    ]);
    expect(stdout.trim().split("\n").sort()).toEqual(services);
  });

  it.each(["grpc", "connect", "grpcweb"])(
    "calls Health/Check with the schema from reflection (%s)",
    async (protocol) => {
      const { stdout } = await run(buf, [
        "curl",
        `--protocol=${protocol}`,
        "--http2-prior-knowledge",
        `${mesh.url}/grpc.health.v1.Health/Check`,
      ]);
      expect(JSON.parse(stdout)).toEqual({ status: "SERVING" });
    },
  );

  it("creates and reads an entity with JSON bodies typed through reflection", async () => {
    const call = (method: string, body: object) =>
      run(buf, [
        "curl",
        "--http2-prior-knowledge",
        "-d",
        JSON.stringify(body),
        `${mesh.url}/floworchestrator.datastore.v1.DataStoreService/${method}`,
      ]);
    await call("CreateEntity", { kind: "flow", id: "cli-1", document: { name: "import orders" } });
    const { stdout } = await call("GetEntity", { kind: "flow", id: "cli-1" });
    expect(JSON.parse(stdout).entity).toMatchObject({
      id: "cli-1",
      version: "1",
      document: { name: "import orders" },
    });
  });

  it("describes a method's request type through reflection", async () => {
    const { stdout } = await run(buf, [
      "curl",
      "--http2-prior-knowledge",
      "--list-methods",
      mesh.url,
    ]);
    expect(stdout).toContain("grpc.health.v1.Health/Watch");
  });

  it("streams Health/Watch and sees a change", async () => {
    const child = spawn(buf, [
      "curl",
      "--protocol=grpc",
      "--http2-prior-knowledge",
      "-d",
      '{"service":"cli.watched"}',
      `${mesh.url}/grpc.health.v1.Health/Watch`,
    ]);
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    const statuses = () => [...out.matchAll(/"status":\s*"(\w+)"/g)].map((m) => m[1]);
    const waitFor = async (n: number) => {
      while (statuses().length < n) await sleep(20);
    };
    await waitFor(1);
    await setHealth(mesh, "cli.watched", "SERVING");
    await waitFor(2);
    child.kill();
    expect(statuses()).toEqual(["SERVICE_UNKNOWN", "SERVING"]);
  });
});
