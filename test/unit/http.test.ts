/** The one-port listener: protocol detection and draining on close. */
import http2 from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { type Handler, listen } from "../../src/server/http.js";

/** Answers after `delayMs`, saying which HTTP version the request came in on. */
const slow =
  (delayMs: number): Handler =>
  (req, res) => {
    setTimeout(() => {
      if (!res.writableEnded && !res.destroyed) res.end(`HTTP/${req.httpVersion}`);
    }, delayMs);
  };

const h2get = (port: number) =>
  new Promise<{ body: string; session: http2.ClientHttp2Session }>((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", reject);
    const req = session.request({ ":path": "/" });
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d: string) => (body += d));
    req.on("end", () => resolve({ body, session }));
    req.on("error", reject);
  });

describe("listen", () => {
  it("serves HTTP/1.1 and h2c prior knowledge on the same port", async () => {
    const l = await listen(slow(0), "127.0.0.1", 0);
    expect(await (await fetch(`http://127.0.0.1:${l.port}/`)).text()).toBe("HTTP/1.1");
    const { body, session } = await h2get(l.port);
    expect(body).toBe("HTTP/2.0");
    session.close();
    await l.close(1000);
  });

  it("lets calls in flight finish within the drain timeout", async () => {
    const l = await listen(slow(300), "127.0.0.1", 0);
    const inflight = fetch(`http://127.0.0.1:${l.port}/`).then((r) => r.text());
    const h2 = h2get(l.port);
    await sleep(50);
    await l.close(5000);
    expect(await inflight).toBe("HTTP/1.1");
    expect((await h2).body).toBe("HTTP/2.0");
    // And nothing new is accepted.
    await expect(fetch(`http://127.0.0.1:${l.port}/`)).rejects.toThrow();
  });

  it("cuts calls still running at the drain timeout, even with open HTTP/2 sessions", async () => {
    const l = await listen(slow(60_000), "127.0.0.1", 0);
    const inflight = fetch(`http://127.0.0.1:${l.port}/`).then((r) => r.text());
    const h2 = h2get(l.port);
    await sleep(50);
    // Resolving at all (before the test's 5 s timeout, not after the handler's 60 s) is the point.
    await l.close(200);
    await expect(inflight).rejects.toThrow();
    expect((await h2).body).toBe(""); // the stream was cut before any response
  });
});
