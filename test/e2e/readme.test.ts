/**
 * The README's service examples run, as written, against a fresh mesh: each
 * call line succeeds, except lines whose comment names the error they
 * demonstrate. Streaming examples (Ctrl+C) are left out.
 */
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { freePort } from "../infra/process.js";
import { clientFor } from "../support/clients.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { poll } from "../support/poll.js";
import { type MeshProcess, spawnMesh } from "../support/process.js";

const run = promisify(execFile);
const readme = readFileSync("README.md", "utf8");

const section = (heading: string) => {
  const start = readme.indexOf(`\n## ${heading}\n`);
  return readme.slice(start, readme.indexOf("\n## ", start + 1));
};
const shellBlocks = (text: string) =>
  [...text.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? "");

/** The first block defines a shell function; the calls of it in later blocks are the examples. */
const examples = (heading: string) => {
  const [prelude = "", ...blocks] = shellBlocks(section(heading));
  const fn = /^(\w+)\(\)/m.exec(prelude)?.[1] ?? "";
  const lines = blocks.flatMap((b) => b.split("\n")).filter((line) => line.startsWith(`${fn} `));
  return {
    prelude,
    calls: lines.filter((line) => !line.includes("Ctrl+C")),
    streams: lines.filter((line) => line.includes("Ctrl+C")),
  };
};

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh();
});
afterAll(() => mesh.close());

describe.each([
  ["DataStore", 10],
  ["MemoryManager", 10],
  ["MessageBus", 10],
  ["Telemetry", 6],
] as const)("README %s examples", (heading, least) => {
  const { prelude, calls, streams } = examples(heading);

  it("cover the service", () => {
    expect(calls.length).toBeGreaterThanOrEqual(least);
    expect(streams.length).toBeGreaterThanOrEqual(1);
  });

  it("run in order as documented", { timeout: 120_000 }, async () => {
    const setup = prelude.replaceAll("http://127.0.0.1:8080", mesh.url);
    for (const line of calls) {
      const expectedError = /#\s*([A-Z_]+),/.exec(line)?.[1];
      const result = await run("bash", ["-c", `${setup}\n${line}`]).then(
        (r) => ({ ok: true, out: r.stdout }),
        (e: { stdout: string; stderr: string }) => ({ ok: false, out: `${e.stdout}${e.stderr}` }),
      );
      if (expectedError) {
        expect(result.ok, line).toBe(false);
        expect(result.out).toContain(expectedError.toLowerCase());
      } else {
        expect(result.ok, `${line}\n${result.out}`).toBe(true);
      }
    }
  });
});

/** Streaming examples stay open until stopped; a subscription first says it is consuming. */
describe("README MessageBus subscription examples", () => {
  const { prelude, streams } = examples("MessageBus");

  it.each(streams)("%s", { timeout: 60_000 }, async (line) => {
    const setup = prelude.replaceAll("http://127.0.0.1:8080", mesh.url);
    const result = await run("timeout", ["8", "bash", "-c", `${setup}\n${line}`]).then(
      (r) => ({ code: 0, out: r.stdout }),
      (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
    );
    expect(result.code, result.out).toBe(124); // still streaming when stopped
    expect(result.out).toContain('"subscribed"');
  });
});

/** The TypeScript client example runs as written (its import resolves through the package's exports). */
describe("README TypeScript client", () => {
  it("prints what its comment says", { timeout: 60_000 }, async () => {
    const section = readme.slice(readme.indexOf("\n### TypeScript\n"));
    const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1] ?? "";
    const expected = /\/\/ prints: (.*)$/m.exec(code)?.[1];
    expect(expected).toBeDefined();
    mkdirSync(".cache", { recursive: true });
    const dir = mkdtempSync(join(".cache", "readme-ts-"));
    const file = join(dir, "client.ts");
    writeFileSync(file, code.replaceAll("http://127.0.0.1:8080", mesh.url));
    try {
      const { stdout } = await run(process.execPath, ["--import", "tsx", file]);
      expect(stdout.trim()).toBe(expected);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** The two-node example: each line started as written (ports swapped for free ones), B's services reached through A. */
describe("README mesh of nodes", () => {
  it("starts the two nodes as shown and A forwards to B", { timeout: 60_000 }, async () => {
    const section = readme.slice(readme.indexOf("\n## A mesh of nodes\n"));
    const lines = (/```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? "")
      .split("\n")
      .filter((l) => l.endsWith("npm start"));
    expect(lines).toHaveLength(2);
    const ports = await Promise.all([freePort(), freePort()]);
    const nodes: MeshProcess[] = [];
    try {
      for (const line of lines) {
        const env = Object.fromEntries(
          line
            .replace(" npm start", "")
            .replaceAll("8081", String(ports[0]))
            .replaceAll("8082", String(ports[1]))
            .split(" ")
            .map((kv) => kv.split("=") as [string, string]),
        );
        nodes.push(await spawnMesh(env));
      }
      const bus = clientFor(MessageBusService, "gRPC (h2c)", `http://127.0.0.1:${ports[0]}`);
      // B is found once A's registry watch has seen it register.
      const receipt = await poll("a publish forwarded by A", () =>
        bus.publishEvent({ event: { messageType: "ReadmeChecked", payload: new Uint8Array() } }),
      );
      expect(receipt.receipt?.messageId).not.toBe("");
    } finally {
      for (const node of nodes) node.child.kill("SIGTERM");
      await Promise.all(nodes.map((n) => n.exited));
    }
  });
});
