/**
 * The web console on the mesh port: `GET /` is its page, `GET /assets/…` its
 * content-hashed script and stylesheet. The browser code (`src/console/`)
 * calls the mesh's own services with Connect-web over HTTP/1.1, same origin.
 *
 * The bundle is made by `scripts/build-console.ts` into `dist/console/`. At
 * start the server checks it against the sources it was made from (listed
 * in its manifest) and rebuilds it when it is missing or older, so a fresh
 * checkout, `npm ci` with or without install scripts, and edited sources all
 * serve a current console. Where esbuild is not installed (a production
 * install without devDependencies) a bundle shipped in `dist/` is served as
 * it is; without one, `/` says how to build it (503).
 *
 * Files are read once into memory: a handful of small files, served with an
 * ETag and, when the client takes it, gzip.
 */
import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { Effect } from "effect";
import { writeHead } from "./http.js";

type Req = IncomingMessage | Http2ServerRequest;
type Res = ServerResponse | Http2ServerResponse;
/** Answers the request when it is the console's; false when it is not. */
type Endpoint = (req: Req, res: Res) => boolean;

/** What `scripts/build-console.ts` writes next to the bundle. */
export interface ConsoleManifest {
  /** The page, relative to the bundle directory. */
  readonly index: string;
  /** Content-hashed assets (relative paths under `assets/`), cacheable forever. */
  readonly assets: ReadonlyArray<string>;
  /** Source files the bundle was made from, relative to the repository root. */
  readonly inputs: ReadonlyArray<string>;
}

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
export const consoleDir = join(repoRoot, "dist", "console");
export const manifestName = "manifest.json";

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
};

/**
 * The page loads only its own script and stylesheet and talks only to its
 * own origin; the favicon is an inline SVG (a data: URL).
 */
const pagePolicy = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

interface Asset {
  readonly body: Buffer;
  /** Present when gzip makes the body smaller. */
  readonly gzip: Buffer | undefined;
  readonly headers: Record<string, string>;
  readonly etag: string;
}

const GZIP_MIN_BYTES = 1024;

const asset = (body: Buffer, file: string, immutable: boolean): Asset => {
  const gz = body.length >= GZIP_MIN_BYTES ? gzipSync(body, { level: 9 }) : undefined;
  const headers: Record<string, string> = {
    "content-type": contentTypes[extname(file)] ?? "application/octet-stream",
    "x-content-type-options": "nosniff",
    // Hashed names never change content; the page itself is revalidated (ETag) on every load
    // so a new build is picked up at once.
    "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
  };
  if (!immutable) {
    headers["content-security-policy"] = pagePolicy;
    headers["referrer-policy"] = "no-referrer";
  }
  const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
  return { body, gzip: gz && gz.length < body.length ? gz : undefined, headers, etag };
};

const readManifest = (dir: string) =>
  Effect.tryPromise(async () => {
    const file = join(dir, manifestName);
    const manifest = JSON.parse(await readFile(file, "utf8")) as ConsoleManifest;
    return { manifest, builtAt: (await stat(file)).mtimeMs };
  });

/** True when a source is newer than the bundle, or gone (the bundle's recipe changed). */
const isStale = (inputs: ReadonlyArray<string>, builtAt: number) =>
  Effect.promise(async () => {
    const times = await Promise.all(
      inputs.map((input) =>
        stat(join(repoRoot, input)).then(
          (s) => s.mtimeMs,
          () => Number.POSITIVE_INFINITY,
        ),
      ),
    );
    return times.some((t) => t > builtAt);
  });

/** Runs the build script; fails when esbuild (a devDependency) is not installed. */
const build = Effect.tryPromise(async () => {
  const { buildConsole } = await import("../../scripts/build-console.js");
  return buildConsole(consoleDir);
});

/**
 * A current bundle's manifest: built or rebuilt when needed and possible,
 * else the stale one that is there; fails when there is none and esbuild
 * is missing.
 */
const ensureBundle = Effect.gen(function* () {
  const existing = yield* Effect.either(readManifest(consoleDir));
  if (existing._tag === "Right") {
    const { manifest, builtAt } = existing.right;
    if (!(yield* isStale(manifest.inputs, builtAt))) return manifest;
  }
  const built = yield* Effect.either(build);
  if (built._tag === "Right") {
    yield* Effect.logInfo(`web console built into ${consoleDir}`);
    return built.right;
  }
  if (existing._tag === "Left") return yield* Effect.fail(built.left);
  yield* Effect.logWarning(
    "web console bundle is older than its sources and cannot be rebuilt here; serving it",
    built.left.error,
  );
  return existing.right.manifest;
});

const loadAssets = (manifest: ConsoleManifest) =>
  Effect.tryPromise(async () => {
    const assets = new Map<string, Asset>();
    const page = asset(await readFile(join(consoleDir, manifest.index)), manifest.index, false);
    assets.set("/", page);
    assets.set("/index.html", page);
    for (const file of manifest.assets) {
      assets.set(`/${file}`, asset(await readFile(join(consoleDir, file)), file, true));
    }
    return assets;
  });

const send = (req: Req, res: Res, a: Asset) => {
  const headers: Record<string, string> = { ...a.headers, etag: a.etag };
  if (a.gzip) {
    // CORS may have set `Vary: Origin` already (module scripts are fetched in CORS mode).
    const vary = res.getHeader("vary");
    headers.vary = vary ? `${String(vary)}, Accept-Encoding` : "Accept-Encoding";
  }
  if (req.headers["if-none-match"] === a.etag) {
    writeHead(res, 304, headers);
    res.end();
    return;
  }
  const gzip = a.gzip !== undefined && /\bgzip\b/.test(String(req.headers["accept-encoding"]));
  const body = gzip && a.gzip ? a.gzip : a.body;
  if (gzip) headers["content-encoding"] = "gzip";
  headers["content-length"] = String(body.length);
  writeHead(res, 200, headers);
  res.end(body);
};

/**
 * The console's GET handler: answers `/`, `/index.html` and the bundle's
 * assets, and returns false for every other path (they keep going to the
 * router, which answers 404). Disabled (`FO_CONSOLE=false`): answers nothing.
 */
export const consoleEndpoint = (enabled: boolean): Effect.Effect<Endpoint> =>
  Effect.gen(function* () {
    const none: Endpoint = () => false;
    if (!enabled) return none;
    const assets = yield* ensureBundle.pipe(
      Effect.flatMap(loadAssets),
      Effect.tapError((e) =>
        Effect.logWarning(
          "web console not built and cannot be built here: run `npm run build:console`",
          e.error,
        ),
      ),
      Effect.option,
    );
    const endpoint: Endpoint = (req, res) => {
      const path = (req.url ?? "").split("?")[0] ?? "";
      if (assets._tag === "None") {
        if (path !== "/") return false;
        writeHead(res, 503, { "content-type": "text/plain; charset=utf-8" });
        res.end("The web console is not built: run `npm run build:console` and restart.\n");
        return true;
      }
      const a = assets.value.get(path);
      if (a === undefined) return false;
      send(req, res, a);
      return true;
    };
    return endpoint;
  });
