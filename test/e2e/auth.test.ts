/**
 * Authentication and identity: with a tokens file every RPC but health and
 * reflection needs a bearer token (UNAUTHENTICATED without, PERMISSION_DENIED
 * outside its methods); memory ownership, lock holders and branches follow
 * the authenticated principal, never a request field; a forwarded call keeps
 * its caller's principal on the next node; tokens never reach the log.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, type ConnectError } from "@connectrpc/connect";
import { Effect, Option, Redacted } from "effect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema } from "../../gen/floworchestrator/common/v1/error_pb.js";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { BranchStatus } from "../../gen/floworchestrator/memory/v1/branch_pb.js";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { MeshClient } from "../../src/client/index.js";
import { defaultConfig } from "../../src/config.js";
import { clientFor, failureOf, type ProtocolName } from "../support/clients.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { poll } from "../support/poll.js";
import { spawnMesh } from "../support/process.js";

const tokens = {
  importer: randomBytes(24).toString("base64url"),
  admin: randomBytes(24).toString("base64url"),
  node: randomBytes(24).toString("base64url"),
};
const sha256 = (t: string) => createHash("sha256").update(t).digest("hex");
const tokensFile = join(mkdtempSync(join(tmpdir(), "fo-auth-")), "tokens.json");
writeFileSync(
  tokensFile,
  JSON.stringify({
    tokens: [
      {
        principal: "importer",
        sha256: sha256(tokens.importer),
        allow: [`${MemoryManagerService.typeName}/*`, `${DataStoreService.typeName}/GetEntity`],
      },
      { principal: "admin", sha256: sha256(tokens.admin), allow: ["*"] },
      { principal: "node", sha256: sha256(tokens.node), allow: ["*"] },
    ],
  }),
);
const security = (over: object = {}) => ({
  security: { ...defaultConfig().security, authTokensFile: Option.some(tokensFile), ...over },
});
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const address = (execution: string) => ({
  kind: { case: "text" as const, value: `${execution}:flow:PROCESS:main:s1:json` },
});

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startMesh(security());
});
afterAll(() => mesh.close());

const detailCode = (e: ConnectError) => e.findDetails(ErrorDetailSchema)[0]?.code;

describe.each([
  "gRPC (h2c)",
  "Connect over HTTP/1.1",
  "gRPC, native port (grpc-js)",
] as ProtocolName[])("tokens over %s", (p) => {
  const store = () => clientFor(DataStoreService, p, mesh.url);

  it("refuses a call without a token, or with an unknown one, as UNAUTHENTICATED", async () => {
    const missing = await failureOf(store().getEntity({ kind: "flows", id: "x" }));
    expect(missing.code).toBe(Code.Unauthenticated);
    expect(detailCode(missing)).toBe("AUTHENTICATION_ERROR.INVALID_CREDENTIALS");
    const wrong = await failureOf(
      store().getEntity({ kind: "flows", id: "x" }, bearer(randomBytes(24).toString("base64url"))),
    );
    expect(wrong.code).toBe(Code.Unauthenticated);
  });

  it("lets a principal call only its methods", async () => {
    const found = await failureOf(
      store().getEntity({ kind: "flows", id: "x" }, bearer(tokens.importer)),
    );
    expect(found.code).toBe(Code.NotFound);
    const denied = await failureOf(
      store().createEntity({ kind: "flows", document: {} }, bearer(tokens.importer)),
    );
    expect(denied.code).toBe(Code.PermissionDenied);
    expect(denied.rawMessage).toContain("importer may not call");
    await store().createEntity({ kind: "flows", document: {} }, bearer(tokens.admin));
  });

  it("answers health without a token", async () => {
    expect((await clientFor(Health, p, mesh.url).check({})).status).toBe(1);
  });
});

describe("identity decides ownership", () => {
  const memory = () => clientFor(MemoryManagerService, "gRPC (h2c)", mesh.url);

  it("owns memory as the principal; naming another owner is refused", async () => {
    const exec = `E-${randomBytes(4).toString("hex")}`;
    await memory().allocate({ address: address(exec), owner: "" }, bearer(tokens.importer));
    const read = await memory().read({ address: address(exec) }, bearer(tokens.importer));
    expect(read.entry?.owner).toBe("importer");
    const spoofed = await failureOf(
      memory().allocate({ address: address(`${exec}x`), owner: "admin" }, bearer(tokens.importer)),
    );
    expect(spoofed.code).toBe(Code.PermissionDenied);
    // admin is allowed every method, but this memory is not admin's.
    const foreign = await failureOf(
      memory().write({ address: address(exec), data: new Uint8Array([1]) }, bearer(tokens.admin)),
    );
    expect(foreign.code).toBe(Code.PermissionDenied);
  });

  it("holds locks as the principal", async () => {
    const lock = `lock-${randomBytes(4).toString("hex")}`;
    const resource = { kind: { case: "name" as const, value: lock } };
    const held = await memory().tryLock({ resource }, bearer(tokens.importer));
    expect(held.acquired).toBe(true);
    const other = await memory().tryLock({ resource }, bearer(tokens.admin));
    expect(other.acquired).toBe(false);
    const spoofed = memory().unlock({ resource, holder: "importer" }, bearer(tokens.admin));
    expect((await failureOf(spoofed)).code).toBe(Code.PermissionDenied);
    await memory().unlock({ resource }, bearer(tokens.importer));
  });

  it("keeps a principal out of another's branch", async () => {
    const exec = `E-${randomBytes(4).toString("hex")}`;
    await memory().createBranch({ executionId: exec, branchPath: "main" }, bearer(tokens.importer));
    const { branch } = await memory().getBranch(
      { executionId: exec, branchPath: "main" },
      bearer(tokens.admin),
    );
    expect(branch?.owner).toBe("importer");
    const update = { executionId: exec, branchPath: "main", status: BranchStatus.IN_PROGRESS };
    expect((await failureOf(memory().updateBranchStatus(update, bearer(tokens.admin)))).code).toBe(
      Code.PermissionDenied,
    );
    await memory().updateBranchStatus(update, bearer(tokens.importer));
  });
});

describe("the typed client and forwarding", () => {
  it("sends its token, and a forwarded call keeps the caller's principal", async () => {
    const b = await startMesh({
      ...security({ meshToken: Option.some(Redacted.make(tokens.node)) }),
      mesh: { ...defaultConfig().mesh, services: ["memory"], seeds: [mesh.url] },
    });
    try {
      const exec = `E-${randomBytes(4).toString("hex")}`;
      const program = Effect.gen(function* () {
        const client = yield* MeshClient;
        yield* client.memory.allocate({ address: address(exec) });
        return yield* client.memory.read({ address: address(exec) });
      });
      // B hosts MemoryManager and forwards DataStore to the first mesh (A).
      const run = (token: string) =>
        Effect.runPromise(
          Effect.scoped(
            program.pipe(
              Effect.provide(MeshClient.layer({ seeds: [b.url], discovery: false, token })),
            ),
          ),
        );
      expect((await run(tokens.importer)).entry?.owner).toBe("importer");
      // B forwards DataStore to A with the caller's token: importer may GetEntity, not create.
      const viaB = (token: string) =>
        Effect.runPromise(
          Effect.scoped(
            Effect.flatMap(MeshClient, (c) =>
              Effect.flip(c.datastore.createEntity({ kind: "flows", document: {} })),
            ).pipe(Effect.provide(MeshClient.layer({ seeds: [b.url], discovery: false, token }))),
          ),
        );
      const error = await poll("B forwarding to A", () => viaB(tokens.importer));
      expect(error._tag).toBe("PermissionDenied");
    } finally {
      await b.close();
    }
  });
});

describe("tokens in the log", () => {
  it("are never written, whatever the outcome", async () => {
    const node = await spawnMesh({ FO_AUTH_TOKENS_FILE: tokensFile, FO_LOG_LEVEL: "debug" });
    try {
      const store = clientFor(DataStoreService, "gRPC (h2c)", node.url);
      const stranger = randomBytes(24).toString("base64url");
      await failureOf(store.getEntity({ kind: "flows", id: "x" }, bearer(tokens.importer)));
      await failureOf(store.createEntity({ kind: "flows", document: {} }, bearer(tokens.importer)));
      await failureOf(store.getEntity({ kind: "flows", id: "x" }, bearer(stranger)));
      const log = node.lines.join("\n");
      expect(log).not.toContain(tokens.importer);
      expect(log).not.toContain(stranger);
    } finally {
      node.child.kill("SIGTERM");
      await node.exited;
    }
  });
});
