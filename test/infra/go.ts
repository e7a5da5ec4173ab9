// Building a Go program from the module proxy, as FerretDB and Jaeger are:
// pure Go (no C toolchain), no VCS stamping (module sources are not git
// checkouts), the machine's default GOCACHE (a rebuild only relinks).
import { capture } from "./process.js";

export const goEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  CGO_ENABLED: "0",
  GOFLAGS: `${process.env.GOFLAGS ?? ""} -buildvcs=false`.trim(),
});

/**
 * Downloads `module@version` into the module cache and returns its
 * (read-only) source directory. Runs in `cwd`, outside the repository, so
 * no go.mod/go.work of ours is picked up.
 */
export const downloadModule = async (
  module: string,
  version: string,
  cwd: string,
  env: NodeJS.ProcessEnv,
): Promise<string> => {
  const info = JSON.parse(
    await capture("go", ["mod", "download", "-json", `${module}@${version}`], { cwd, env }),
  ) as { Dir?: string; Error?: string };
  if (info.Dir === undefined) throw new Error(`go mod download failed: ${info.Error ?? "no Dir"}`);
  return info.Dir;
};
