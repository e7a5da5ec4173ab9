/**
 * Go command-line tools the interop tests use (protoc plugins, grpcurl,
 * grpc-health-probe), built from the Go module proxy at pinned versions into
 * the git-ignored `.cache/tools/bin`. A binary is only rebuilt when the
 * module version embedded in it (`go version -m`) is not the pinned one, so
 * a warm cache costs one `go version -m` per tool.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { goEnv } from "../infra/go.js";
import { repoRoot, withLock } from "../infra/process.js";

export const toolsBin = join(repoRoot, ".cache", "tools", "bin");

export interface GoTool {
  /** Binary name (the last element of the package path). */
  readonly name: string;
  /** Main package to `go install`. */
  readonly pkg: string;
  /** Module that `pkg` belongs to, as `go version -m` names it. */
  readonly module: string;
  readonly version: string;
}

const tool = (pkg: string, module: string, version: string): GoTool => ({
  name: pkg.slice(pkg.lastIndexOf("/") + 1),
  pkg,
  module,
  version,
});

export const goTools = {
  protocGenGo: tool(
    "google.golang.org/protobuf/cmd/protoc-gen-go",
    "google.golang.org/protobuf",
    "v1.36.12",
  ),
  protocGenGoGrpc: tool(
    "google.golang.org/grpc/cmd/protoc-gen-go-grpc",
    "google.golang.org/grpc/cmd/protoc-gen-go-grpc",
    "v1.6.2",
  ),
  protocGenConnectGo: tool(
    "connectrpc.com/connect/cmd/protoc-gen-connect-go",
    "connectrpc.com/connect",
    "v1.21.1",
  ),
  grpcurl: tool(
    "github.com/fullstorydev/grpcurl/cmd/grpcurl",
    "github.com/fullstorydev/grpcurl",
    "v1.9.4",
  ),
  grpcHealthProbe: tool(
    "github.com/grpc-ecosystem/grpc-health-probe",
    "github.com/grpc-ecosystem/grpc-health-probe",
    "v0.4.62",
  ),
  /** gRPC load generator for `npm run bench` (bench/tools.ts). */
  ghz: tool("github.com/bojand/ghz/cmd/ghz", "github.com/bojand/ghz", "v0.120.0"),
} as const;

export interface Output {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its end without blocking the event loop (an in-process mesh must keep serving). */
export const exec = (
  cmd: string,
  args: readonly string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<Output> =>
  new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd ?? repoRoot,
      env: opts.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${(opts.timeoutMs ?? 0) / 1000}s)`;
      child.kill("SIGKILL");
    }, opts.timeoutMs ?? 600_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${err.message}`));
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });

/** The last lines of a tool's output, for failure messages. */
export const outputTail = (out: Output, lines = 40): string =>
  `${out.stdout}\n${out.stderr}`.trimEnd().split("\n").slice(-lines).join("\n");

const installedVersion = async (t: GoTool): Promise<string | undefined> => {
  const binary = join(toolsBin, t.name);
  if (!existsSync(binary)) return undefined;
  const out = await exec("go", ["version", "-m", binary], { env: goEnv() });
  if (out.code !== 0) return undefined;
  // The main module's line: "\tmod\t<module>\t<version>\t<sum>".
  const line = out.stdout.split("\n").find((l) => l.trim().startsWith("mod\t"));
  const [, module, version] = line?.trim().split("\t") ?? [];
  return module === t.module ? version : undefined;
};

export interface Installed {
  readonly binary: string;
  /** False when the cached binary was already of the pinned version. */
  readonly built: boolean;
}

/**
 * Returns `t`'s binary, building it with `go install` when the cached one is
 * missing or of another version. Throws with the tail of the Go command's
 * output when the build fails.
 */
export const ensureGoTool = async (t: GoTool): Promise<Installed> => {
  const binary = join(toolsBin, t.name);
  if ((await installedVersion(t)) === t.version) return { binary, built: false };
  // Two test files may provision at once: one build per tool at a time.
  return withLock(`go-tool-${t.name}`, 900_000, async () => {
    if ((await installedVersion(t)) === t.version) return { binary, built: false };
    await mkdir(toolsBin, { recursive: true });
    const out = await exec("go", ["install", `${t.pkg}@${t.version}`], {
      env: { ...goEnv(), GOBIN: toolsBin },
      timeoutMs: 840_000,
    });
    if (out.code !== 0) {
      throw new Error(
        `go install ${t.pkg}@${t.version} failed (exit ${out.code}):\n${outputTail(out)}`,
      );
    }
    const now = await installedVersion(t);
    if (now !== t.version) {
      throw new Error(`${binary} reports ${t.module} ${now ?? "(none)"}, wanted ${t.version}`);
    }
    return { binary, built: true };
  });
};

/** The environment for running the tools: `.cache/tools/bin` first on the PATH. */
export const toolsEnv = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
  ...goEnv(),
  PATH: `${toolsBin}${delimiter}${process.env.PATH ?? ""}`,
  ...extra,
});
