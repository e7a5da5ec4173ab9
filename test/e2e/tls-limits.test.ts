/**
 * TLS on the one port (ALPN offering h2 and http/1.1; gRPC and Connect both
 * served), mTLS taking the principal from the client certificate, and the
 * per-client limits on request rate and open streams. Certificates are made
 * by `openssl` for each run.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Effect, Option } from "effect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema } from "../../gen/floworchestrator/common/v1/error_pb.js";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { MeshClient } from "../../src/client/index.js";
import { defaultConfig } from "../../src/config.js";
import { MAX_STREAMS_PER_CONNECTION } from "../../src/server/http.js";
import { clientFor, failureOf } from "../support/clients.js";
import { startMesh, type TestMesh } from "../support/mesh.js";

const dir = mkdtempSync(join(tmpdir(), "fo-tls-"));
const file = (name: string) => join(dir, name);
const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
/** A key and a certificate for `cn`, signed by the test CA. */
const issue = (name: string, cn: string, san?: string) => {
  openssl(
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    `/CN=${cn}`,
  );
  if (san) writeFileSync(file(`${name}.ext`), `subjectAltName=${san}\n`);
  openssl(
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "1",
    "-out",
    `${name}.crt`,
    ...(san ? ["-extfile", `${name}.ext`] : []),
  );
};

beforeAll(() => {
  openssl(
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-subj",
    "/CN=fo-test-ca",
    "-days",
    "1",
  );
  issue("server", "localhost", "IP:127.0.0.1,DNS:localhost");
  issue("client", "importer");
});

const pem = (name: string) => readFileSync(file(name));
const tls = (over: object = {}) => ({
  security: {
    ...defaultConfig().security,
    tlsCert: Option.some(file("server.crt")),
    tlsKey: Option.some(file("server.key")),
    ...over,
  },
});

describe("TLS", () => {
  let mesh: TestMesh;
  beforeAll(async () => {
    mesh = await startMesh(tls());
  });
  afterAll(() => mesh.close());

  it("serves https and offers h2 and http/1.1 by ALPN", async () => {
    expect(mesh.url).toMatch(/^https:\/\//);
    for (const protocol of ["h2", "http/1.1"]) {
      const negotiated = await new Promise<string | false>((resolve, reject) => {
        const socket = tlsConnect(
          { host: "127.0.0.1", port: mesh.port, ca: pem("ca.crt"), ALPNProtocols: [protocol] },
          () => {
            resolve(socket.alpnProtocol ?? false);
            socket.end();
          },
        );
        socket.once("error", reject);
      });
      expect(negotiated).toBe(protocol);
    }
  });

  it("answers gRPC over h2 and Connect over HTTP/1.1 on the same port", async () => {
    const grpc = createGrpcTransport({ baseUrl: mesh.url, nodeOptions: { ca: pem("ca.crt") } });
    expect((await createClient(Health, grpc).check({})).status).toBe(1);
    const h1 = createConnectTransport({
      baseUrl: mesh.url,
      httpVersion: "1.1",
      nodeOptions: { ca: pem("ca.crt") },
    });
    const missing = await failureOf(
      createClient(DataStoreService, h1).getEntity({ kind: "flows", id: "nope" }),
    );
    expect(missing.code).toBe(Code.NotFound);
  });

  it("serves native gRPC over TLS on its own port", async () => {
    expect(mesh.grpcUrl).toMatch(/^https:/);
    const grpc = createGrpcTransport({
      baseUrl: mesh.grpcUrl as string,
      nodeOptions: { ca: pem("ca.crt") },
    });
    expect((await createClient(Health, grpc).check({})).status).toBe(1);
  });

  it("serves the typed client over grpc-js with the CA trusted", async () => {
    const health = await Effect.runPromise(
      Effect.scoped(
        Effect.flatMap(MeshClient, (c) => c.telemetry.getHealth({})).pipe(
          Effect.provide(
            MeshClient.layer({ seeds: [mesh.url], discovery: false, tls: { ca: pem("ca.crt") } }),
          ),
        ),
      ),
    );
    expect(health.components.length).toBeGreaterThan(0);
  });
});

describe("mTLS", () => {
  let mesh: TestMesh;
  beforeAll(async () => {
    mesh = await startMesh(tls({ tlsClientCa: Option.some(file("ca.crt")) }));
  });
  afterAll(() => mesh.close());

  it("refuses a client without a certificate", async () => {
    const grpc = createGrpcTransport({ baseUrl: mesh.url, nodeOptions: { ca: pem("ca.crt") } });
    const error = await failureOf(createClient(Health, grpc).check({}));
    expect([Code.Unavailable, Code.Unknown, Code.Internal]).toContain(error.code);
  });

  it("refuses a client without a certificate on the native gRPC port", async () => {
    const grpc = createGrpcTransport({
      baseUrl: mesh.grpcUrl as string,
      nodeOptions: { ca: pem("ca.crt") },
    });
    const error = await failureOf(createClient(Health, grpc).check({}));
    expect([Code.Unavailable, Code.Unknown, Code.Internal]).toContain(error.code);
  });

  it.each([
    ["the one port", (m: TestMesh) => m.url],
    ["the native gRPC port", (m: TestMesh) => m.grpcUrl as string],
  ])(
    "names the caller after its certificate on %s: memory it allocates is owned by that CN",
    async (_, url) => {
      const grpc = createGrpcTransport({
        baseUrl: url(mesh),
        nodeOptions: { ca: pem("ca.crt"), cert: pem("client.crt"), key: pem("client.key") },
      });
      const memory = createClient(MemoryManagerService, grpc);
      const address = {
        kind: {
          case: "text" as const,
          value: `E-${randomBytes(4).toString("hex")}:f:PROCESS:main:s:json`,
        },
      };
      await memory.allocate({ address });
      expect((await memory.read({ address })).entry?.owner).toBe("importer");
    },
  );
});

describe("mTLS across a forwarding hop", () => {
  // Node A hosts the registry; node B hosts MemoryManager. Each presents its own
  // certificate to the other and trusts the other to pass on its caller's identity.
  let a: TestMesh;
  let b: TestMesh;
  const node = (name: string, over: { mesh: object; forwarders: string[] }) => ({
    security: {
      ...defaultConfig().security,
      tlsCert: Option.some(file(`${name}.crt`)),
      tlsKey: Option.some(file(`${name}.key`)),
      tlsClientCa: Option.some(file("ca.crt")),
      trustedForwarders: over.forwarders,
    },
    mesh: { ...defaultConfig().mesh, lease: "2 seconds" as never, ...over.mesh },
  });
  const memoryAt = (url: string, client: string, headers?: Record<string, string>) =>
    createClient(
      MemoryManagerService,
      createGrpcTransport({
        baseUrl: url,
        nodeOptions: { ca: pem("ca.crt"), cert: pem(`${client}.crt`), key: pem(`${client}.key`) },
        ...(headers === undefined
          ? {}
          : {
              interceptors: [
                (next) => (req) => {
                  for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
                  return next(req);
                },
              ],
            }),
      }),
    );
  const address = () => ({
    kind: {
      case: "text" as const,
      value: `E-${randomBytes(4).toString("hex")}:f:PROCESS:main:s:json`,
    },
  });

  beforeAll(async () => {
    issue("node-a", "node-a", "IP:127.0.0.1,DNS:localhost");
    issue("node-b", "node-b", "IP:127.0.0.1,DNS:localhost");
    a = await startMesh(
      node("node-a", {
        mesh: { services: ["datastore"], register: Option.some(true) },
        forwarders: ["node-b"],
      }),
    );
    b = await startMesh(
      node("node-b", {
        mesh: { services: ["memory", "messaging", "telemetry"], seeds: [a.url] },
        forwarders: ["node-a"],
      }),
    );
    // B is READY in A's registry and A's router has seen it.
    for (let i = 0; ; i++) {
      const routed = await memoryAt(a.url, "client")
        .exists({ address: address() }, { timeoutMs: 1000 })
        .then(
          () => true,
          () => false,
        );
      if (routed) break;
      if (i === 100) throw new Error("node A never forwarded MemoryManager calls to node B");
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  it("forwards over TLS, and the caller's certificate, not node A's, owns what it allocates", async () => {
    const viaA = memoryAt(a.url, "client");
    const at = address();
    await viaA.allocate({ address: at });
    expect((await viaA.read({ address: at })).entry?.owner).toBe("importer");
    // The same caller straight at B is the same owner.
    await memoryAt(b.url, "client").write({ address: at, data: new Uint8Array([1]) });
  });

  it("takes a passed-on identity only from a trusted node", async () => {
    const error = await failureOf(
      memoryAt(b.url, "client", { "fo-forwarded-principal": "someone-else" }).allocate({
        address: address(),
      }),
    );
    expect(error.code).toBe(Code.PermissionDenied);
  });
});

describe.each(["gRPC (h2c)", "gRPC, native port (grpc-js)"] as const)(
  "per-client limits over %s",
  (protocol) => {
    let mesh: TestMesh;
    beforeAll(async () => {
      mesh = await startMesh({
        security: { ...defaultConfig().security, rateLimit: 5, maxStreamsPerClient: 2 },
      });
    });
    afterAll(() => mesh.close());

    it("refuses calls beyond the rate with RESOURCE_EXHAUSTED, and never health", async () => {
      const store = clientFor(DataStoreService, protocol, mesh.url);
      const outcomes = await Promise.all(
        Array.from({ length: 20 }, () =>
          store.getEntity({ kind: "flows", id: "x" }).then(
            () => "ok",
            (e: Error) => e,
          ),
        ),
      );
      const limited = outcomes.filter(
        (o): o is import("@connectrpc/connect").ConnectError =>
          typeof o !== "string" && (o as { code?: Code }).code === Code.ResourceExhausted,
      );
      expect(limited.length).toBeGreaterThanOrEqual(14);
      expect(limited[0]?.findDetails(ErrorDetailSchema)[0]?.code).toBe(
        "RESOURCE_ERROR.RATE_LIMITED",
      );
      const health = clientFor(Health, protocol, mesh.url);
      for (let i = 0; i < 20; i++) expect((await health.check({})).status).toBe(1);
    });

    it("allows a client two open streams, a third once one ends", async () => {
      await new Promise((r) => setTimeout(r, 1_100)); // the rate bucket refills
      const store = clientFor(DataStoreService, protocol, mesh.url);
      const open = () => {
        const abort = new AbortController();
        const it = store.watchServices({}, { signal: abort.signal })[Symbol.asyncIterator]();
        return { first: it.next(), abort };
      };
      const [a, b] = [open(), open()];
      await Promise.all([a.first, b.first]);
      const third = open();
      await expect(third.first).rejects.toMatchObject({ code: Code.ResourceExhausted });
      a.abort.abort();
      await new Promise((r) => setTimeout(r, 200));
      const fourth = open();
      await expect(fourth.first).resolves.toMatchObject({ done: false });
      b.abort.abort();
      fourth.abort.abort();
    });

    it("caps the concurrent calls of one HTTP/2 connection", async () => {
      const session = http2.connect(
        protocol === "gRPC (h2c)" ? mesh.url : (mesh.grpcUrl as string),
      );
      try {
        await new Promise((resolve, reject) => {
          session.once("remoteSettings", resolve);
          session.once("error", reject);
        });
        expect(session.remoteSettings.maxConcurrentStreams).toBe(MAX_STREAMS_PER_CONNECTION);
      } finally {
        session.close();
      }
    });
  },
);
