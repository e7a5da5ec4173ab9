/**
 * Bundles the mesh (`src/main.ts` and everything it imports from `src/` and
 * `gen/`) with esbuild into `dist/mesh/main.js`, which `npm start` runs.
 * Packages stay imports of `node_modules`. Running plain JavaScript instead
 * of compiling TypeScript at every start halves the start-up time, and takes
 * the loader's per-function wrappers (tsx keeps function names by wrapping
 * each one) off every call: about 4 % of the CPU of a native gRPC call.
 *
 * `dist/mesh/` sits two levels under the repository root, as `src/<area>/`
 * does, so paths the code resolves from its own URL (`../../package.json`)
 * hold in both. Tests and benchmarks build it before they start meshes;
 * several may at once, so the bundle is written under a temporary name and
 * renamed into place.
 */
import { randomUUID } from "node:crypto";
import { mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import * as esbuild from "esbuild";
import { repoRoot } from "../src/server/console.js";

export const meshBundle = join(repoRoot, "dist", "mesh", "main.js");

/** Builds `dist/mesh/main.js` (with its source map); returns its path. */
export async function buildMesh(): Promise<string> {
  const result = await esbuild.build({
    absWorkingDir: repoRoot,
    entryPoints: [join(repoRoot, "src", "main.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node26",
    packages: "external",
    sourcemap: "linked",
    outfile: meshBundle,
    write: false,
    logLevel: "silent",
  });
  await mkdir(join(repoRoot, "dist", "mesh"), { recursive: true });
  // The map first: a reader that sees the new bundle finds its map too.
  const isMap = (f: esbuild.OutputFile) => f.path.endsWith(".map");
  for (const file of [
    ...result.outputFiles.filter(isMap),
    ...result.outputFiles.filter((f) => !isMap(f)),
  ]) {
    const temp = `${file.path}.tmp-${process.pid}-${randomUUID()}`;
    await writeFile(temp, file.contents);
    await rename(temp, file.path);
  }
  return meshBundle;
}

let built: Promise<string> | undefined;
/** `buildMesh` once per process: tests and benchmarks start many meshes from the same sources. */
export const meshBuiltOnce = (): Promise<string> => {
  built ??= buildMesh();
  return built;
};

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await buildMesh();
}
