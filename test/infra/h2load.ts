// h2load (nghttp2's HTTP/2 load generator, Debian `nghttp2-client`) for the
// benchmarks. Unlike Prometheus it is not unpacked with `dpkg -x`: the binary
// links libev, libjansson, libjemalloc and libxml2, which a bare Debian lacks,
// so it is installed with apt-get (which brings them) when it is missing.
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { cacheDir, capture, type Log, run, withLock } from "./process.js";

const provisionLog = join(cacheDir, "h2load", "provision.log");

const onPath = async (): Promise<string | undefined> => {
  const out = await capture("sh", ["-c", "command -v h2load || true"]);
  const path = out.trim();
  return path !== "" && existsSync(path) ? path : undefined;
};

/**
 * Returns the path of `h2load`, installing `nghttp2-client` with apt-get first
 * if it is not on the PATH (needs root, as the rest of test/infra's apt use).
 * Retries once after `apt-get update` when the package lists do not know it.
 */
export async function ensureH2load(opts: { log?: Log } = {}): Promise<string> {
  const found = await onPath();
  if (found !== undefined) return found;
  const log = opts.log ?? (() => {});
  return withLock("h2load-install", 10 * 60_000, async () => {
    const again = await onPath();
    if (again !== undefined) return again;
    await mkdir(dirname(provisionLog), { recursive: true });
    log(`[infra:h2load] installing nghttp2-client with apt-get (log: ${provisionLog})`);
    const apt = (args: string[]) =>
      run("apt-get", ["-o", "APT::Sandbox::User=root", ...args], {
        logFile: provisionLog,
        timeoutMs: 10 * 60_000,
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      });
    const install = () => apt(["install", "-y", "--no-install-recommends", "nghttp2-client"]);
    try {
      await install();
    } catch {
      await apt(["update"]);
      await install();
    }
    const path = await onPath();
    if (path === undefined) throw new Error("nghttp2-client installed but no h2load on the PATH");
    return path;
  });
}
