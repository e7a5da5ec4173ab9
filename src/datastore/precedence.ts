/**
 * A string whose plain (binary) order is semver precedence, so databases can
 * sort and page versions: 1.9.0 < 1.10.0, 1.0.0-rc.1 < 1.0.0, numeric
 * pre-release identifiers below alphanumeric ones, fewer identifiers first.
 */
import semver from "semver";

const num = (n: number) => n.toString().padStart(16, "0");

export const precedenceKey = (version: string): string => {
  const parsed = semver.parse(version);
  if (parsed === null) throw new Error(`not a semantic version: ${version}`);
  const core = `${num(parsed.major)}.${num(parsed.minor)}.${num(parsed.patch)}`;
  if (parsed.prerelease.length === 0) return `${core}~`; // a release sorts after its pre-releases
  // "!" sorts below every identifier character, so a shorter identifier list comes first.
  const ids = parsed.prerelease.map((id) => (typeof id === "number" ? `0${num(id)}` : `1${id}`));
  return `${core}-${ids.join("!")}`;
};
