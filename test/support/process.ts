/** Runs the mesh as its own process, as `npm start` does. */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { meshBuiltOnce } from "../../scripts/build-mesh.js";

export interface MeshProcess {
  readonly child: ChildProcess;
  readonly url: string;
  /** The native gRPC server's URL, unless it is off. */
  readonly grpcUrl: string | undefined;
  /** Every stdout line so far. */
  readonly lines: string[];
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>;
  /** Its FO_DATA_DIR. */
  readonly dataDir: string;
}

/** As `npm start` runs it: one node process, so signals reach the mesh directly. */
export const spawnMesh = async (env: Record<string, string> = {}): Promise<MeshProcess> => {
  const dataDir = env.FO_DATA_DIR ?? mkdtempSync(join(tmpdir(), "fo-mesh-"));
  const child = spawn(process.execPath, [await meshBuiltOnce()], {
    env: { ...process.env, FO_PORT: "0", ...env, FO_DATA_DIR: dataDir },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = once(child, "exit").then(([code]) => code as number | null);
  const lines: string[] = [];
  let grpcUrl: string | undefined;
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      lines.push(line);
      const match = /listening on (http:\/\/\S+)/.exec(line);
      grpcUrl ??= /native gRPC on (http:\/\/[^\s"]+)/.exec(line)?.[1];
      if (match?.[1]) resolve(match[1]);
    });
    exited.then((code) => reject(new Error(`mesh exited with ${code} before listening`)));
  });
  return { child, url, grpcUrl, lines, exited, dataDir };
};

/** Runs the mesh expecting it to stop by itself; returns its exit code and stderr. */
export const runMeshToExit = async (env: Record<string, string>) => {
  const child = spawn(process.execPath, [await meshBuiltOnce()], {
    env: { ...process.env, ...env },
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const [code] = await once(child, "exit");
  return { code: code as number | null, stderr };
};
