/**
 * Python interop: the grpcio suite in test/interop/python runs against a mesh
 * on embedded backends, and the README's Python section runs as written.
 *
 * The virtualenv lives in the git-ignored cache and is rebuilt only when
 * requirements.txt changes; stubs are generated from proto/ on every run so
 * they never drift from it.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type TestMesh } from "../support/mesh.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const suiteDir = join(root, "test/interop/python");
const requirements = join(suiteDir, "requirements.txt");
const cacheDir = join(root, ".cache/interop");
const venv = join(cacheDir, "python-venv");
const python = join(venv, "bin/python");
const marker = join(venv, ".fo-provisioned");
const provisionLog = join(cacheDir, "python-provision.log");

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly output: string;
}

/** Runs a command to its end; never rejects, so callers can report its output. */
const run = (
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<Run> =>
  new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? root,
      env: options.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
      timeout: options.timeoutMs,
      killSignal: "SIGKILL",
    });
    let stdout = "";
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      output += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => (output += d));
    child.on("error", (e) => {
      output += `\n${e.message}`;
    });
    child.on("close", (code, signal) =>
      resolve({
        code: signal ? null : code,
        stdout,
        output: signal ? `${output}\n(killed: ${signal})` : output,
      }),
    );
  });

const tail = (text: string, lines = 40) =>
  text
    .trimEnd()
    .split("\n")
    .slice(-lines)
    .map((line) => (line.length > 400 ? `${line.slice(0, 400)}…` : line))
    .join("\n");

/** The environment of every Python process: inherited Python settings must not leak in. */
const pythonEnv = (extra: Record<string, string>): NodeJS.ProcessEnv => {
  const { PYTHONPATH: _path, PYTHONHOME: _home, VIRTUAL_ENV: _venv, ...env } = process.env;
  return {
    ...env,
    PATH: `${join(venv, "bin")}:${env.PATH ?? ""}`,
    PYTHONDONTWRITEBYTECODE: "1",
    PIP_DISABLE_PIP_VERSION_CHECK: "1",
    PIP_NO_INPUT: "1",
    ...extra,
  };
};

/**
 * Makes the virtualenv unless the marker says it was made from this very
 * requirements.txt and its packages still import.
 */
const provision = async (): Promise<"cached" | "installed"> => {
  const stamp = createHash("sha256").update(readFileSync(requirements)).digest("hex");
  const current = await readFile(marker, "utf8").catch(() => "");
  if (current.trim() === stamp) {
    const check = await run(python, ["-c", "import grpc, grpc_tools, grpc_status, pytest"], {
      env: pythonEnv({}),
      timeoutMs: 60_000,
    });
    if (check.code === 0) return "cached";
  }
  await mkdir(cacheDir, { recursive: true });
  await rm(venv, { recursive: true, force: true });
  const made = await run("python3", ["-m", "venv", venv], { timeoutMs: 120_000 });
  if (made.code !== 0) {
    throw new Error(`python3 -m venv ${venv} failed (exit ${made.code}):\n${tail(made.output)}`);
  }
  const pip = await run(python, ["-m", "pip", "install", "--no-input", "-r", requirements], {
    env: pythonEnv({}),
    timeoutMs: 780_000,
  });
  await writeFile(provisionLog, pip.output);
  if (pip.code !== 0) {
    throw new Error(
      `pip install -r test/interop/python/requirements.txt failed (exit ${pip.code}); full log in ${provisionLog}, last lines:\n${tail(pip.output)}`,
    );
  }
  // Written last: an interrupted install leaves no marker and is redone.
  await writeFile(marker, `${stamp}\n`);
  return "installed";
};

const ourProtos = () =>
  readdirSync(join(root, "proto/floworchestrator"), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".proto"))
    .map((f) => join("floworchestrator", f))
    .sort();

/** Only floworchestrator/: a generated grpc/health package would shadow grpcio's `grpc`. */
const generateStubs = async (out: string) => {
  await mkdir(out, { recursive: true });
  const protoc = await run(
    python,
    [
      "-m",
      "grpc_tools.protoc",
      "-I",
      join(root, "proto"),
      `--python_out=${out}`,
      `--pyi_out=${out}`,
      `--grpc_python_out=${out}`,
      ...ourProtos(),
    ],
    { env: pythonEnv({}), timeoutMs: 120_000 },
  );
  if (protoc.code !== 0) {
    throw new Error(`grpc_tools.protoc failed (exit ${protoc.code}):\n${tail(protoc.output)}`);
  }
};

/** The Python tests as written, known before the run so each gets its own Vitest test. */
const pythonTests = readdirSync(suiteDir)
  .filter((f) => /^test_.*\.py$/.test(f))
  .flatMap((f) =>
    [...readFileSync(join(suiteDir, f), "utf8").matchAll(/^def (test_\w+)\(/gm)].map(
      (m) => m[1] ?? "",
    ),
  );

interface PytestEntry {
  readonly nodeid: string;
  readonly when: "setup" | "call" | "teardown";
  readonly outcome: "passed" | "failed" | "skipped";
  readonly longrepr: string;
}
interface PytestReport {
  readonly exitstatus: number;
  readonly results: readonly PytestEntry[];
}

/** `path/test_x.py::test_name[param]` → `test_name`. */
const testName = (nodeid: string) => nodeid.split("::").at(-1)?.replace(/\[.*$/, "") ?? nodeid;

let mesh: TestMesh;
let runDir = "";
let provisioned: "cached" | "installed";
let provisionMs = 0;
let pytest: Run;
let report: PytestReport | undefined;
let setupFailure: Error | undefined;

/**
 * Fails the calling test with the reason setup failed (pip's output tail, a
 * protoc error…): a failed hook would only mark the tests skipped, and under
 * CI nothing may pass as skipped.
 */
const ready = () => {
  if (setupFailure) throw setupFailure;
};

const setUp = async () => {
  const started = Date.now();
  provisioned = await provision();
  provisionMs = Date.now() - started;
  await mkdir(cacheDir, { recursive: true });
  // One directory per run, so two runs at once never clobber each other's stubs.
  runDir = await mkdtemp(join(cacheDir, "python-run-"));
  const stubs = join(runDir, "stubs");
  await generateStubs(stubs);
  mesh = await startMesh();
  const reportPath = join(runDir, "pytest-report.json");
  pytest = await run(python, ["-m", "pytest", suiteDir, "-v", "--tb=short"], {
    env: pythonEnv({
      FO_MESH_ADDR: `127.0.0.1:${mesh.port}`,
      PYTHONPATH: stubs,
      FO_PYTEST_REPORT: reportPath,
    }),
    timeoutMs: 110_000,
  });
  report = await readFile(reportPath, "utf8").then(
    (text) => JSON.parse(text) as PytestReport,
    () => undefined,
  );
};

beforeAll(async () => {
  await setUp().catch((e: unknown) => {
    setupFailure = e instanceof Error ? e : new Error(String(e));
  });
});

afterAll(async () => {
  await mesh?.close();
  if (runDir) await rm(runDir, { recursive: true, force: true });
});

describe("Python grpcio client (test/interop/python)", () => {
  it("finds the Python tests", () => {
    expect(pythonTests.length).toBeGreaterThanOrEqual(8);
  });

  it.each(pythonTests)("%s", (name) => {
    ready();
    const entries = report?.results.filter((r) => testName(r.nodeid) === name) ?? [];
    // Shows pytest's own words when the test did not pass: the failing
    // phase and traceback, or the console tail when it never ran.
    const verdict =
      entries.length === 0
        ? `did not run; pytest exit ${pytest.code}, output ends:\n${tail(pytest.output)}`
        : entries
            .filter((r) => r.outcome !== "passed")
            .map((r) => `${r.when} ${r.outcome}:\n${r.longrepr}`)
            .join("\n") || "passed";
    expect(verdict).toBe("passed");
  });

  it("pytest ran exactly those tests and exited 0", () => {
    ready();
    const ran = [...new Set(report?.results.map((r) => testName(r.nodeid)))].sort();
    expect(ran, tail(pytest.output)).toEqual([...pythonTests].sort());
    expect(pytest.code, tail(pytest.output)).toBe(0);
    expect(report?.exitstatus).toBe(0);
  });

  it("reuses a provisioned virtualenv quickly", () => {
    ready();
    // The first run installs; any later one must only check the marker.
    const slowReuse = provisioned === "cached" && provisionMs >= 10_000;
    expect(slowReuse, `reusing the virtualenv took ${provisionMs} ms`).toBe(false);
    expect(readFileSync(marker, "utf8").trim()).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe("README, Clients in other languages, Python", () => {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const start = readme.indexOf("\n### Python\n");
  const end = readme.slice(start + 1).search(/\n##+ /);
  const section = readme.slice(start, end < 0 ? undefined : start + 1 + end);
  const block = (lang: string) =>
    new RegExp(`\`\`\`${lang}\\n([\\s\\S]*?)\`\`\``).exec(section)?.[1] ?? "";
  const generate = block("sh");
  const client = block("python");
  const printed = /#\s*prints:\s*(.+)$/m.exec(client)?.[1]?.trim();

  it("has a generation command and a client whose output it states", () => {
    expect(start).toBeGreaterThan(0);
    expect(generate).toContain("grpc_tools.protoc");
    expect(client).toContain("127.0.0.1:8080");
    expect(printed).toBeTruthy();
  });

  it("generates the clients with its command and runs its client against the mesh", async () => {
    ready();
    const dir = join(runDir, "readme");
    await mkdir(dir);
    // As a user would: from the client's own directory, MESH naming this repository.
    const gen = await run("bash", ["-euo", "pipefail", "-c", generate], {
      cwd: dir,
      env: pythonEnv({ MESH: root }),
      timeoutMs: 60_000,
    });
    expect(gen.code, tail(gen.output)).toBe(0);
    await writeFile(
      join(dir, "client.py"),
      client.replaceAll("127.0.0.1:8080", `127.0.0.1:${mesh.port}`),
    );
    const ran = await run(python, ["client.py"], {
      cwd: dir,
      env: pythonEnv({}),
      timeoutMs: 60_000,
    });
    expect(ran.code, tail(ran.output)).toBe(0);
    expect(ran.stdout.trim()).toBe(printed);
  });
});
