/**
 * Go interop: the `go test` program in test/interop/go calls every service
 * through grpc-go and connect-go against a mesh on embedded backends, then
 * again through node A of a split deployment, which relays the calls for
 * the services it does not host to node B; and the README's Go section runs
 * as written.
 *
 * The protoc plugins are built once into the git-ignored `.cache/tools/bin`
 * (test/interop/go-tools.ts); the stubs are generated from proto/ on every
 * run into the git-ignored test/interop/go/gen, so they never drift from it.
 * go.mod and go.sum are committed: the run downloads nothing unpinned.
 */
import { readFileSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Option } from "effect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { defaultConfig } from "../../src/config.js";
import { repoRoot } from "../infra/process.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { poll } from "../support/poll.js";
import { ensureGoTool, exec, goTools, type Output, outputTail, toolsEnv } from "./go-tools.js";

const moduleDir = join(repoRoot, "test/interop/go");
const template = "test/interop/go/buf.gen.yaml";
const readmeDir = join(moduleDir, "gen/readme");

/** What `go test` must report as passed: each stack × each service, and the errors. */
const stacks = ["grpc-go", "connect-h2c", "connect-http1", "grpcweb-http1"];
const scenarios = ["DataStore", "MemoryManager", "MessageBus", "Telemetry", "Errors"];
const expectedTests = [
  ...stacks.flatMap((s) => [`TestMesh/${s}`, ...scenarios.map((c) => `TestMesh/${s}/${c}`)]),
  "TestMesh",
  "TestGRPCHealth",
];

/** The Go environment of every run: our module alone, its go.sum as committed. */
const goRunEnv = (extra: NodeJS.ProcessEnv = {}) =>
  toolsEnv({ GOWORK: "off", GOFLAGS: "-buildvcs=false -mod=readonly", ...extra });

interface GoEvent {
  readonly Action: string;
  readonly Package?: string;
  readonly Test?: string;
  readonly Output?: string;
}

interface TestResult {
  action: string;
  output: string;
}

/** One `go test` run against one mesh URL. */
interface GoRun {
  output?: Output;
  /** What `go test -v` would have printed: the Output of every JSON event, then stderr. */
  transcript: string;
  readonly results: Map<string, TestResult>;
}

let mesh: TestMesh | undefined;
/** A split deployment: A hosts DataStore (the registry) and relays the rest to B. */
let nodeA: TestMesh | undefined;
let nodeB: TestMesh | undefined;
let provisionMs = 0;
let built = true;
const single: GoRun = { transcript: "", results: new Map() };
const relayed: GoRun = { transcript: "", results: new Map() };
let setupFailure: Error | undefined;

/**
 * Fails the calling test with the reason setup failed (the tool's output
 * tail): a failed hook would only mark the tests skipped, and under CI
 * nothing may pass as skipped.
 */
const ready = () => {
  if (setupFailure) throw setupFailure;
};

const generate = async () => {
  const out = await exec("node_modules/.bin/buf", ["generate", "--template", template], {
    env: toolsEnv(),
    timeoutMs: 120_000,
  });
  if (out.code !== 0) {
    throw new Error(`buf generate --template ${template} failed:\n${outputTail(out)}`);
  }
};

const setUp = async () => {
  const started = Date.now();
  const plugins = [goTools.protocGenGo, goTools.protocGenGoGrpc, goTools.protocGenConnectGo];
  built = false;
  for (const t of plugins) built = (await ensureGoTool(t)).built || built;
  provisionMs = Date.now() - started;
  await generate();
  mesh = await startMesh();
  await runGoTests(mesh.url, single);
  const lease = { ...defaultConfig().mesh, lease: "2 seconds" as never };
  nodeA = await startMesh({
    mesh: { ...lease, services: ["datastore"], register: Option.some(true) },
  });
  nodeB = await startMesh({
    mesh: { ...lease, services: ["memory", "messaging", "telemetry"], seeds: [nodeA.url] },
  });
  const transport = createGrpcTransport({ baseUrl: nodeA.url });
  const viaA = createClient(MemoryManagerService, transport);
  await poll("node A relaying MemoryManager calls to node B", () =>
    viaA.listAddresses({}, { timeoutMs: 1000 }).then(
      () => true,
      () => undefined,
    ),
  );
  // A's health checks (every 2 s) see B too: its overall status is what TestGRPCHealth checks.
  const health = createClient(Health, transport);
  await poll("node A SERVING overall", async () =>
    (await health.check({ service: "" })).status === HealthCheckResponse_ServingStatus.SERVING
      ? true
      : undefined,
  );
  await runGoTests(nodeA.url, relayed);
};

const runGoTests = async (url: string, run: GoRun) => {
  run.output = await exec("go", ["test", "-json", "-count=1", "-timeout=300s", "./..."], {
    cwd: moduleDir,
    env: goRunEnv({ FO_MESH_URL: url }),
    timeoutMs: 600_000,
  });
  for (const line of run.output.stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    const event = JSON.parse(line) as GoEvent;
    run.transcript += event.Output ?? "";
    if (event.Test === undefined) continue;
    const result = run.results.get(event.Test) ?? { action: "run", output: "" };
    if (event.Action === "output") result.output += event.Output ?? "";
    else if (["pass", "fail", "skip"].includes(event.Action)) result.action = event.Action;
    run.results.set(event.Test, result);
  }
  run.transcript += run.output.stderr;
};

const transcriptTail = (run: GoRun) =>
  outputTail({ code: run.output?.code ?? null, stdout: run.transcript, stderr: "" });

beforeAll(async () => {
  await setUp().catch((e: unknown) => {
    setupFailure = e instanceof Error ? e : new Error(String(e));
  });
});

afterAll(async () => {
  await mesh?.close();
  await nodeB?.close();
  await nodeA?.close();
  await rm(readmeDir, { recursive: true, force: true });
});

describe.each([
  ["a mesh", single],
  ["node A, relaying to node B", relayed],
])("Go clients (test/interop/go, grpc-go and connect-go) against %s", (_, run) => {
  it.each(expectedTests)("%s", (name) => {
    ready();
    const result = run.results.get(name);
    const verdict =
      result === undefined
        ? `did not run; go test exit ${run.output?.code}, output ends:\n${transcriptTail(run)}`
        : result.action === "pass"
          ? "pass"
          : `${result.action}:\n${result.output}`;
    expect(verdict).toBe("pass");
  });

  it("go test ran exactly those tests and exited 0", () => {
    ready();
    expect([...run.results.keys()].sort(), transcriptTail(run)).toEqual([...expectedTests].sort());
    expect(run.output?.code, transcriptTail(run)).toBe(0);
  });
});

describe("the Go module", () => {
  it("the Go sources are gofmt-clean", async () => {
    ready();
    const out = await exec("gofmt", ["-l", "mesh_test.go"], { cwd: moduleDir });
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toBe("");
  });

  it("reuses the built plugins quickly", () => {
    ready();
    // A build takes seconds to a minute per tool; reusing one is a `go version -m`.
    const slowReuse = !built && provisionMs >= 5_000;
    expect(slowReuse, `reusing the plugins took ${provisionMs} ms`).toBe(false);
  });
});

describe("README, Clients in other languages, Go", () => {
  const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
  const start = readme.indexOf("\n### Go\n");
  const end = readme.slice(start + 1).search(/\n##+ /);
  const section = readme.slice(start, end < 0 ? undefined : start + 1 + end);
  const block = (lang: string) =>
    new RegExp(`\`\`\`${lang}\\n([\\s\\S]*?)\`\`\``).exec(section)?.[1] ?? "";
  const generateCommand = block("sh").trim();
  const client = block("go");
  const printed = /\/\/\s*prints:\s*(.+)$/m.exec(client)?.[1]?.trim();

  it("has a generation command with the template and a client whose output it states", () => {
    expect(start).toBeGreaterThan(0);
    expect(generateCommand).toBe(`npx buf generate --template ${template}`);
    expect(client).toContain('"http://127.0.0.1:8080"');
    expect(printed).toBeTruthy();
  });

  it("generates the clients with its command and runs its client against the mesh", async () => {
    ready();
    const gen = await exec("bash", ["-euo", "pipefail", "-c", generateCommand], {
      env: toolsEnv(),
      timeoutMs: 120_000,
    });
    expect(gen.code, outputTail(gen)).toBe(0);
    await mkdir(readmeDir, { recursive: true });
    const main = join(readmeDir, "main.go");
    await writeFile(main, client.replaceAll("http://127.0.0.1:8080", mesh?.url ?? ""));
    const fmt = await exec("gofmt", ["-l", main]);
    expect(fmt.stdout, "the README's Go is not gofmt-clean").toBe("");
    const ran = await exec("go", ["run", "./gen/readme"], {
      cwd: moduleDir,
      env: goRunEnv(),
      timeoutMs: 110_000,
    });
    expect(ran.code, outputTail(ran)).toBe(0);
    expect(ran.stdout.trim()).toBe(printed);
  });
});
