/**
 * Bundles the web console (`src/console/`) with esbuild into `dist/console/`:
 * `index.html`, content-hashed `assets/console-*.js` and `.css`, and
 * `manifest.json` (what to serve, and the source files the bundle was made
 * from, so the server can tell a stale bundle).
 *
 * `npm run build:console` runs it; the mesh also runs it at start when the
 * bundle is missing or older than its sources (src/server/console.ts).
 * Several test workers may start meshes, and so builds, at once: every file
 * is written under a temporary name and renamed into place, and the
 * manifest last, so a reader never sees a half-written bundle.
 */
import { randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { basename, join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import * as esbuild from "esbuild";
import { type ConsoleManifest, consoleDir, manifestName, repoRoot } from "../src/server/console.js";

const sourceDir = join(repoRoot, "src", "console");
const template = join(sourceDir, "index.html");

/** Browsers of the last few years: native BigInt, async iteration, fetch streams. */
const target = ["es2022", "chrome111", "firefox115", "safari16.4"];

const writeAtomically = async (file: string, data: string | Uint8Array) => {
  const temp = `${file}.tmp-${process.pid}-${randomUUID()}`;
  await writeFile(temp, data);
  await rename(temp, file);
};

/** Builds the console into `outDir`; returns what it wrote. */
export async function buildConsole(outDir: string = consoleDir): Promise<ConsoleManifest> {
  const assetsDir = join(outDir, "assets");
  const result = await esbuild.build({
    absWorkingDir: repoRoot,
    entryPoints: { console: join(sourceDir, "main.ts") },
    tsconfig: join(sourceDir, "tsconfig.json"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target,
    minify: true,
    charset: "utf8",
    legalComments: "eof",
    entryNames: "[name]-[hash]",
    outdir: assetsDir,
    metafile: true,
    write: false,
    logLevel: "silent",
  });

  const assets = result.outputFiles.map((f) => relative(outDir, f.path).split("\\").join("/"));
  const script = assets.find((a) => a.endsWith(".js"));
  const style = assets.find((a) => a.endsWith(".css"));
  if (script === undefined || style === undefined) {
    throw new Error(`esbuild made ${assets.join(", ")}: expected one .js and one .css`);
  }
  const page = (await readFile(template, "utf8"))
    .replace("{{console.js}}", script)
    .replace("{{console.css}}", style);

  const manifest: ConsoleManifest = {
    index: "index.html",
    assets,
    inputs: [
      ...Object.keys(result.metafile.inputs),
      relative(repoRoot, template),
      relative(repoRoot, join(sourceDir, "tsconfig.json")),
      "scripts/build-console.ts",
    ].sort(),
  };

  await mkdir(assetsDir, { recursive: true });
  for (const file of result.outputFiles) await writeAtomically(file.path, file.contents);
  await writeAtomically(join(outDir, manifest.index), page);
  await writeAtomically(join(outDir, manifestName), `${JSON.stringify(manifest, null, 2)}\n`);

  // Earlier builds' assets: gone once the new manifest is in place. Files still being
  // written by a concurrent build keep their temporary names and are left alone.
  const current = new Set(assets.map((a) => basename(a)));
  for (const name of await readdir(assetsDir)) {
    if (!current.has(name) && !name.includes(".tmp-")) {
      await rm(join(assetsDir, name), { force: true });
    }
  }
  return manifest;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const started = Date.now();
  const manifest = await buildConsole();
  const bytes = await Promise.all(
    manifest.assets.map(async (a) => `${a} (${(await readFile(join(consoleDir, a))).length} B)`),
  );
  console.log(
    `web console built in ${Date.now() - started} ms: ${relative(process.cwd(), consoleDir)}/{index.html, ${bytes.join(", ")}}`,
  );
}
