/**
 * The floor of a forwarding hop: a node:http2 relay that passes every call
 * on to one upstream (`RELAY_UPSTREAM`) as it came: headers, body, response
 * headers, data and trailers. No decoding, routing, deadline, telemetry or
 * auth: the least any Node process in the path of a call can cost. Run as
 * its own process, like a mesh node. Prints one line: "listening on <url>".
 */
import http2 from "node:http2";
import type { AddressInfo } from "node:net";

const upstream = process.env.RELAY_UPSTREAM;
if (upstream === undefined) throw new Error("RELAY_UPSTREAM is not set");

/** Connection-specific headers (RFC 9113 §8.2.2) stay on their hop. */
const HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);
const pass = (headers: http2.IncomingHttpHeaders) => {
  const out: http2.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) if (!HOP.has(k)) out[k] = v;
  return out;
};

let session: http2.ClientHttp2Session | undefined;
const connection = () => {
  if (session === undefined || session.closed || session.destroyed) {
    session = http2.connect(upstream);
    session.on("error", () => {});
  }
  return session;
};

const server = http2.createServer({ settings: { initialWindowSize: 1024 * 1024 } });
server.on("stream", (stream: http2.ServerHttp2Stream, headers) => {
  const out = connection().request(pass(headers));
  stream.pipe(out);
  out.on("response", (head, flags) => {
    const endStream = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    stream.respond(pass(head), endStream ? { endStream } : { waitForTrailers: true });
    if (endStream) return;
    out.on("trailers", (trailers) =>
      stream.once("wantTrailers", () => stream.sendTrailers(pass(trailers))),
    );
    out.pipe(stream);
  });
  out.on("error", () => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
  stream.on("close", () => out.close());
});
server.listen(0, "127.0.0.1", () =>
  console.log(`listening on http://127.0.0.1:${(server.address() as AddressInfo).port}`),
);
process.on("SIGTERM", () => {
  session?.close();
  server.close();
  setTimeout(() => process.exit(0), 1000).unref();
});
