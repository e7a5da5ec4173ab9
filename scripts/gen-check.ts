/**
 * Fails when gen/ is not exactly what `buf generate` makes from proto/:
 * regenerates into a temporary directory and compares file by file, so it
 * works on a dirty tree and never touches gen/ itself.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const listFiles = (dir: string): string[] =>
  readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();

const tmp = mkdtempSync(join(tmpdir(), "fo-gen-"));
try {
  const run = spawnSync("npx", ["buf", "generate", "--output", tmp], { stdio: "inherit" });
  if (run.status !== 0) process.exit(run.status ?? 1);
  const fresh = join(tmp, "gen");
  const want = listFiles(fresh);
  const have = listFiles("gen");
  const problems = [
    ...want.filter((f) => !have.includes(f)).map((f) => `missing: gen/${f}`),
    ...have.filter((f) => !want.includes(f)).map((f) => `stale: gen/${f}`),
    ...want
      .filter((f) => have.includes(f))
      .filter((f) => !readFileSync(join(fresh, f)).equals(readFileSync(join("gen", f))))
      .map((f) => `differs: gen/${f}`),
  ];
  if (problems.length > 0) {
    console.error(
      `gen/ is out of date with proto/ (run npm run generate):\n  ${problems.join("\n  ")}`,
    );
    process.exit(1);
  }
  console.log(`gen/ is up to date (${want.length} files)`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
