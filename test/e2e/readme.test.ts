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
  const calls = blocks
    .flatMap((b) => b.split("\n"))
    .filter((line) => line.startsWith(`${fn} `) && !line.includes("Ctrl+C"));
  return { prelude, calls };
};

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh();
});
afterAll(() => mesh.close());

describe.each(["DataStore", "MemoryManager"])("README %s examples", (heading) => {
  const { prelude, calls } = examples(heading);

  it("cover the service", () => {
    expect(calls.length).toBeGreaterThanOrEqual(12);
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
