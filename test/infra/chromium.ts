// Debian's chromium for the browser test: installed with apt-get when it is
// missing (we run as root in CI and in the dev container). Playwright's own
// browser download is not used: its CDN is not reachable from here, and the
// Debian package gets the shared libraries it needs from the same apt source.
// A failed install fails the test with the tail of apt's output; nothing skips.
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { backendError, cacheDir, run, withLock } from "./process.js";

export const chromiumPath = "/usr/bin/chromium";

const logFile = join(cacheDir, "chromium", "provision.log");

/** apt-get, non-interactive, waiting for a dpkg lock held by another install. */
const aptGet = (args: string[]) =>
  run("apt-get", ["-o", "DPkg::Lock::Timeout=600", ...args], {
    logFile,
    timeoutMs: 15 * 60_000,
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });

/** Path of a usable chromium, installing the Debian package first if needed. */
export async function ensureChromium(): Promise<string> {
  if (existsSync(chromiumPath)) return chromiumPath;
  await mkdir(join(cacheDir, "chromium"), { recursive: true });
  // One installer at a time across test workers; the others find it installed.
  await withLock("chromium", 20 * 60_000, async () => {
    if (existsSync(chromiumPath)) return;
    try {
      await aptGet(["update"]);
      await aptGet(["install", "-y", "--no-install-recommends", "chromium"]);
    } catch (err) {
      throw backendError("chromium", `install (${(err as Error).message})`, logFile);
    }
  });
  if (!existsSync(chromiumPath)) {
    throw backendError("chromium", `install left no ${chromiumPath}`, logFile);
  }
  return chromiumPath;
}
