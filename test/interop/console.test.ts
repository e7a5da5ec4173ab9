/**
 * The web console in a real browser (Debian's chromium, driven by
 * playwright-core) against a mesh on embedded backends. Other clients
 * change the mesh over gRPC (HTTP/2) while the page watches: what they do
 * must show up on the page, through the page's own Connect-web calls over
 * HTTP/1.1. Leaves a screenshot in `.cache/artifacts/console.png`.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Option } from "effect";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { ServiceStatus } from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
import { BranchStatus } from "../../gen/floworchestrator/memory/v1/branch_pb.js";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { defaultConfig } from "../../src/config.js";
import { ensureChromium } from "../infra/chromium.js";
import { repoRoot } from "../infra/process.js";
import { startMesh, type TestMesh } from "../support/mesh.js";

const screenshot = join(repoRoot, ".cache", "artifacts", "console.png");
/** How long the page gets to show what a client just did. */
const SHOWN_MS = 15_000;

let mesh: TestMesh;
let context: BrowserContext;
let page: Page;
let profile: string;
let datastore: Client<typeof DataStoreService>;
let memory: Client<typeof MemoryManagerService>;
let bus: Client<typeof MessageBusService>;
/** Errors the page reported (uncaught exceptions, console errors). */
const pageErrors: string[] = [];
/** Protocol of every RPC response the page received, from the DevTools protocol. */
const rpcProtocols = new Set<string>();

beforeAll(async () => {
  const executablePath = await ensureChromium();
  mesh = await startMesh();
  const transport = createGrpcTransport({ baseUrl: mesh.url });
  datastore = createClient(DataStoreService, transport);
  memory = createClient(MemoryManagerService, transport);
  bus = createClient(MessageBusService, transport);

  // A fresh profile per run: no cache, no service worker, no state from an earlier run.
  profile = await mkdtemp(join(tmpdir(), "fo-console-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => pageErrors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(`console: ${m.text()}`);
  });
  const cdp = await context.newCDPSession(page);
  cdp.on("Network.responseReceived", (e) => {
    if (new URL(e.response.url).pathname.startsWith("/floworchestrator.")) {
      rpcProtocols.add(e.response.protocol ?? "unknown");
    }
  });
  await cdp.send("Network.enable");
});

afterAll(async () => {
  await context?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
  await mesh?.close();
});

const shown = (selector: string, hasText?: string | RegExp) =>
  page
    .locator(selector, hasText === undefined ? {} : { hasText })
    .first()
    .waitFor({ state: "visible", timeout: SHOWN_MS });

const register = async (
  serviceId: string,
  serviceType: string,
  version: string,
  endpoint: string,
  status: ServiceStatus,
) => {
  await datastore.registerService({
    service: { serviceId, version, serviceType, protocol: "grpc", endpoints: [endpoint] },
    leaseDuration: { seconds: 300n },
  });
  const path = [ServiceStatus.INITIALIZED, ServiceStatus.READY, ServiceStatus.PROCESSING];
  for (const next of path.slice(0, path.indexOf(status) + 1)) {
    await datastore.updateServiceStatus({ serviceId, version, status: next });
  }
};

const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

const allocate = async (address: string, owner: string, data?: unknown) => {
  await memory.allocate({
    address: { kind: { case: "text", value: address } },
    owner,
    contentType: "application/json",
    ttl: { seconds: 600n },
    maxIdle: { seconds: 600n },
  });
  if (data !== undefined) {
    await memory.write({
      address: { kind: { case: "text", value: address } },
      owner,
      data: json(data),
    });
  }
};

describe("web console in chromium", () => {
  it("loads the page from the mesh", async () => {
    const res = await page.goto(mesh.url);
    expect(res?.status()).toBe(200);
    expect(res?.headers()["content-type"]).toBe("text/html; charset=utf-8");
    expect(await page.title()).toContain("FlowOrchestrator Mesh");
    await shown("h1", "FlowOrchestrator Mesh");
  });

  it("shows the mesh's health as SERVING, streamed by WatchHealth", async () => {
    await shown("#overall-health", /^SERVING$/);
    await shown("#header-health", /^SERVING$/);
    await shown('[data-stream="health"][data-state="live"]');
    const row = page.locator('[data-component="floworchestrator.datastore.v1.DataStoreService"]');
    expect(await row.textContent()).toContain("SERVING");
  });

  it("shows a service registered over gRPC, and its status changes", async () => {
    await shown('[data-stream="services"][data-state="live"]');
    await register("csv-importer", "importer", "1.2.0", "127.0.0.1:7001", ServiceStatus.READY);
    await shown('[data-service="csv-importer@1.2.0"]', "READY");
    const row = page.locator('[data-service="csv-importer@1.2.0"]');
    expect(await row.textContent()).toContain("importer");
    expect(await row.textContent()).toContain("HEALTHY");

    await register(
      "json-transform",
      "processor",
      "2.4.1",
      "127.0.0.1:7002",
      ServiceStatus.PROCESSING,
    );
    await register("s3-export", "exporter", "0.9.0", "127.0.0.1:7003", ServiceStatus.INITIALIZED);
    await shown('[data-service="json-transform@2.4.1"]', "PROCESSING");
    await shown('[data-service="s3-export@0.9.0"]', "INITIALIZED");
  });

  it("shows the memory of an execution grouped by branch, and keeps it current", async () => {
    const exec = "EXEC-42";
    await memory.createBranch({ executionId: exec, branchPath: "main" });
    await memory.createBranch({ executionId: exec, branchPath: "main.a" });
    await memory.createBranch({ executionId: exec, branchPath: "main.b" });
    for (const path of ["main", "main.a", "main.b"]) {
      await memory.updateBranchStatus({
        executionId: exec,
        branchPath: path,
        status: BranchStatus.IN_PROGRESS,
      });
    }
    await allocate(`${exec}:FLOW-7:IMPORT:main:1:Orders`, "csv-importer", {
      rows: [{ id: 1 }, { id: 2 }, { id: 3 }],
    });
    await allocate(`${exec}:FLOW-7:PROCESS:main.a:2:Totals`, "json-transform", { total: 42 });
    await allocate(`${exec}:FLOW-7:PROCESS:main.b:2:Totals:ByRegion`, "json-transform", {
      eu: 20,
      us: 22,
    });
    await allocate(`${exec}:FLOW-7:EXPORT:main.b:3:Report`, "s3-export");
    await memory.updateBranchStatus({
      executionId: exec,
      branchPath: "main.a",
      status: BranchStatus.COMPLETED,
      retainForMerge: true,
    });

    await page.fill("#execution-id", exec);
    await page.click('#memory-form button[type="submit"]');
    await shown('[data-stream="memory"][data-state="live"]');
    for (const [branch, address, owner] of [
      ["main", `${exec}:FLOW-7:IMPORT:main:1:Orders`, "csv-importer"],
      ["main.a", `${exec}:FLOW-7:PROCESS:main.a:2:Totals`, "json-transform"],
      ["main.b", `${exec}:FLOW-7:PROCESS:main.b:2:Totals:ByRegion`, "json-transform"],
    ] as const) {
      // Each address is listed inside its own branch's group.
      await shown(`[data-branch="${branch}"] [data-address="${address}"]`);
      const row = page.locator(`[data-branch="${branch}"] [data-address="${address}"]`);
      expect(await row.textContent()).toContain(owner);
    }
    expect(await page.locator('[data-branch="main.a"]').textContent()).toContain("COMPLETED");

    // Allocated while the page watches: WatchMemory tells the page to list again.
    const later = `${exec}:FLOW-7:EXPORT:main:4:Summary`;
    await allocate(later, "s3-export", { sent: true });
    await shown(`[data-branch="main"] [data-address="${later}"]`);
  });

  it("feeds published events, from the page's button and from a gRPC client, and acks them", async () => {
    const type = "floworchestrator.console.TestEvent";
    await shown('[data-stream="feed"][data-state="live"]');

    await page.click("#publish");
    await shown(`#feed [data-type="${type}"]`, "from the console");

    // More events than a subscription keeps unacknowledged (16 by default): all of them
    // arrive only if the page acknowledges what it was delivered.
    for (let i = 1; i <= 20; i++) {
      await bus.publishEvent({
        event: {
          messageType: type,
          source: "order-service",
          contentType: "application/json",
          payload: json({ order: 1000 + i, status: "imported" }),
        },
      });
    }
    await shown(`#feed [data-type="${type}"]`, '"order":1020');
    expect(await page.locator(`#feed [data-type="${type}"]`).count()).toBe(21);
  });

  it("made every RPC over HTTP/1.1, without an error on the page", async () => {
    expect([...rpcProtocols]).toEqual(["http/1.1"]);
    expect(pageErrors).toEqual([]);
    await mkdir(join(repoRoot, ".cache", "artifacts"), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
  });

  it("shows its streams as disconnected when the mesh goes away", async () => {
    await mesh.close();
    await shown('[data-stream="health"][data-state="disconnected"]');
    await shown('[data-stream="services"][data-state="disconnected"]');
    await shown('[data-stream="feed"][data-state="disconnected"]');
    await shown("#header-health", /^DISCONNECTED$/);
  });
});

describe("web console with authentication on", () => {
  it("calls nothing successfully until a token is entered, then shows the mesh", async () => {
    const token = randomBytes(24).toString("base64url");
    const file = join(await mkdtemp(join(tmpdir(), "fo-console-auth-")), "tokens.json");
    await writeFile(
      file,
      JSON.stringify({
        tokens: [
          {
            principal: "operator",
            sha256: createHash("sha256").update(token).digest("hex"),
            allow: ["*"],
          },
        ],
      }),
    );
    const secured = await startMesh({
      security: { ...defaultConfig().security, authTokensFile: Option.some(file) },
    });
    const tab = await context.newPage();
    try {
      await tab.goto(secured.url);
      await tab
        .locator('[data-stream="health"][data-state="disconnected"]')
        .waitFor({ timeout: SHOWN_MS });
      await tab.fill(".token-input", token);
      await tab.click(".token-form button");
      await tab.locator('[data-stream="health"][data-state="live"]').waitFor({ timeout: SHOWN_MS });
      expect(await tab.locator("#overall-health").textContent()).toMatch(/SERVING/);
    } finally {
      await tab.close();
      await secured.close();
    }
  });
});
