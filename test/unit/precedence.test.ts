import fc from "fast-check";
import semver from "semver";
import { describe, expect, it } from "vitest";
import { precedenceKey } from "../../src/datastore/precedence.js";

const sign = (n: number) => Math.sign(n);

describe("precedenceKey", () => {
  it("orders like semver precedence", () => {
    const versions = [
      "1.10.0",
      "1.9.0",
      "1.0.0",
      "1.0.0-rc.1",
      "1.0.0-alpha",
      "1.0.0-alpha.1",
      "1.0.0-alpha-1",
      "1.0.0-alpha.beta",
      "1.0.0-beta.11",
      "1.0.0-beta.2",
      "0.9.12",
      "10.0.0",
      "2.0.0+build.5",
    ];
    const byKey = [...versions].sort((a, b) => (precedenceKey(a) < precedenceKey(b) ? -1 : 1));
    expect(byKey).toEqual([...versions].sort(semver.compare));
  });

  it("agrees with semver.compare on random versions", () => {
    const id = fc.oneof(
      fc.nat({ max: 30 }).map(String),
      fc.stringMatching(/^[a-z][a-z0-9-]{0,4}$/),
    );
    const version = fc
      .tuple(fc.nat(20), fc.nat(20), fc.nat(20), fc.array(id, { maxLength: 3 }))
      .map(([a, b, c, pre]) => `${a}.${b}.${c}${pre.length ? `-${pre.join(".")}` : ""}`);
    fc.assert(
      fc.property(version, version, (a, b) => {
        const byKey =
          precedenceKey(a) === precedenceKey(b) ? 0 : precedenceKey(a) < precedenceKey(b) ? -1 : 1;
        expect(byKey).toBe(sign(semver.compare(a, b)));
      }),
      { numRuns: 2000 },
    );
  });
});
