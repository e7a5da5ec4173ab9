/**
 * The README's service examples run, as written, against a fresh mesh: each
 * call line succeeds, except lines whose comment names the error they
 * demonstrate. Streaming examples (Ctrl+C) are left out.
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type TestMesh } from "../support/mesh.js";

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
