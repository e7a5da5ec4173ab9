/**
 * The web console as plain HTTP sees it, without a browser: the page and its
 * bundle over HTTP/1.1 (what browsers speak to the mesh) and HTTP/2, cache
 * headers and revalidation, gzip, and unknown paths still 404.
 * test/interop/console.test.ts drives the page in a real browser.
 */
import http from "node:http";
import http2 from "node:http2";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { spawnMesh } from "../support/process.js";

interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

/** GET over HTTP/1.1 with Node's own client (no transparent decompression). */
const get1 = (url: string, headers: Record<string, string> = {}) =>
  new Promise<Reply>((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
          }),
        );
      })
      .on("error", reject);
  });

/** GET over cleartext HTTP/2 with prior knowledge. */
const get2 = (base: string, path: string) =>
  new Promise<Reply>((resolve, reject) => {
    const session = http2.connect(base);
    session.on("error", reject);
    const stream = session.request({ ":path": path });
    const chunks: Buffer[] = [];
    let head: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => {
      head = h;
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      session.close();
      const { ":status": status, ...headers } = head;
      resolve({ status: Number(status), headers, body: Buffer.concat(chunks) });
    });
    stream.on("error", reject);
  });

const assetsOf = (html: string) => ({
  script: /<script type="module" src="(assets\/console-[\w-]+\.js)"/.exec(html)?.[1],
  style: /<link rel="stylesheet" href="(assets\/console-[\w-]+\.css)"/.exec(html)?.[1],
});

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh();
});
afterAll(() => mesh.close());

describe("web console over HTTP", () => {
  it("GET / over HTTP/1.1 is the page, referencing its script and stylesheet", async () => {
    const res = await get1(`${mesh.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(res.headers["cache-control"]).toBe("no-cache");
    expect(res.headers["content-security-policy"]).toContain("connect-src 'self'");
    const html = res.body.toString("utf8");
    expect(html).toContain("<title>FlowOrchestrator Mesh");
    const { script, style } = assetsOf(html);
    expect(script).toBeDefined();
    expect(style).toBeDefined();
  });

  it("serves the bundle as JavaScript and the stylesheet as CSS, cacheable for good", async () => {
    const { script, style } = assetsOf((await get1(`${mesh.url}/`)).body.toString("utf8"));
    const js = await get1(`${mesh.url}/${script}`);
    expect(js.status).toBe(200);
    expect(js.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(js.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    expect(js.headers["x-content-type-options"]).toBe("nosniff");
    // The console's own code, not an error page (a boolean: a failure must not print 170 kB).
    expect(js.body.includes("FlowOrchestrator Mesh")).toBe(true);
    const css = await get1(`${mesh.url}/${style}`);
    expect(css.status).toBe(200);
    expect(css.headers["content-type"]).toBe("text/css; charset=utf-8");
  });

  it("revalidates with the ETag (304) and sends gzip to clients that take it", async () => {
    const { script } = assetsOf((await get1(`${mesh.url}/`)).body.toString("utf8"));
    const plain = await get1(`${mesh.url}/${script}`);
    const etag = String(plain.headers.etag);
    const again = await get1(`${mesh.url}/${script}`, { "if-none-match": etag });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
    const zipped = await get1(`${mesh.url}/${script}`, { "accept-encoding": "gzip, br" });
    expect(zipped.headers["content-encoding"]).toBe("gzip");
    expect(zipped.headers.vary).toContain("Accept-Encoding");
    expect(zipped.body.length).toBeLessThan(plain.body.length);
    expect(gunzipSync(zipped.body).equals(plain.body)).toBe(true);
  });

  it("serves the page and its bundle over HTTP/2 too", async () => {
    const page = await get2(mesh.url, "/");
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toBe("text/html; charset=utf-8");
    const { script } = assetsOf(page.body.toString("utf8"));
    const js = await get2(mesh.url, `/${script}`);
    expect(js.status).toBe(200);
    expect(js.headers["content-type"]).toBe("text/javascript; charset=utf-8");
  });

  it("leaves unknown paths to the router: 404", async () => {
    for (const path of ["/nope", "/assets/console-unknown.js", "/assets/", "/index.htm"]) {
      expect((await get1(`${mesh.url}${path}`)).status, path).toBe(404);
    }
    expect((await get2(mesh.url, "/nope")).status).toBe(404);
  });

  it("is off with FO_CONSOLE=false: / is 404 like any unknown path", async () => {
    // The real process, so the variable is read as `npm start` reads it.
    const off = await spawnMesh({ FO_CONSOLE: "false" });
    try {
      expect((await get1(`${off.url}/`)).status).toBe(404);
      // The rest of the mesh is unaffected.
      expect((await get1(`${off.url}/healthz`)).status).toBe(200);
    } finally {
      off.child.kill("SIGTERM");
      expect(await off.exited).toBe(0);
    }
  });
});
