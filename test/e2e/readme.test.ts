/**
 * The README's DataStore examples run, as written, against a fresh mesh:
 * each `call …` line succeeds, except lines whose comment names the error
 * they demonstrate.
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type TestMesh } from "../support/mesh.js";

const run = promisify(execFile);

const section = (markdown: string, heading: string) => {
  const start = markdown.indexOf(`\n## ${heading}\n`);
  const end = markdown.indexOf("\n## ", start + 1);
  return markdown.slice(start, end);
};
const shellBlocks = (text: string) =>
  [...text.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? "");

const readme = readFileSync("README.md", "utf8");
const [prelude = "", ...examples] = shellBlocks(section(readme, "DataStore"));
const calls = examples
  .flatMap((block) => block.split("\n"))
  .filter((line) => line.startsWith("call ") && !line.includes("Ctrl+C"));

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh();
});
afterAll(() => mesh.close());

describe("README DataStore examples", () => {
  it("has examples for every capability", () => {
    expect(calls.length).toBeGreaterThanOrEqual(15);
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
