/** Memory addresses: every string parses or is refused with INVALID_ARGUMENT, never a crash. */

import { Effect, Either } from "effect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { formatAddress, isWithin, parseText } from "../../src/memory/address.js";

const segment = fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/);
const branch = fc
  .array(fc.stringMatching(/^[a-z0-9]{1,5}$/), { maxLength: 4 })
  .map((parts) => ["main", ...parts].join("."));
const address = fc
  .tuple(
    segment,
    segment,
    fc.constantFrom("IMPORT", "PROCESS", "EXPORT"),
    branch,
    segment,
    segment,
    fc.option(segment),
  )
  .map(([e, f, t, b, s, d, x]) => [e, f, t, b, s, d, ...(x === null ? [] : [x])].join(":"));

const parse = (text: string) => Effect.runSync(Effect.either(parseText("address", text)));

describe("memory addresses", () => {
  it("round-trips every well-formed address", () => {
    fc.assert(
      fc.property(address, (text) => {
        const parsed = parse(text);
        expect(Either.isRight(parsed)).toBe(true);
        if (Either.isRight(parsed)) expect(formatAddress(parsed.right)).toBe(text);
      }),
      { numRuns: 500 },
    );
  });

  it("refuses anything else with INVALID_ARGUMENT naming a field, and never throws", () => {
    fc.assert(
      fc.property(fc.fullUnicodeString({ maxLength: 80 }), (text) => {
        const parsed = parse(text);
        if (Either.isLeft(parsed)) {
          expect(parsed.left._tag).toBe("InvalidArgument");
          expect(parsed.left.violations[0]?.field).toMatch(/^address/);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("names the offending segment", () => {
    const field = (text: string) => {
      const parsed = parse(text);
      return Either.isLeft(parsed) ? parsed.left.violations.map((v) => v.field) : [];
    };
    expect(field("E:F:PROCESS:main:2")).toEqual(["address"]);
    expect(field("E:F:MOVE:main:2:R")).toEqual(["address.step_type"]);
    expect(field("E:F:PROCESS:main.:2:R")).toEqual(["address.branch_path"]);
    expect(field(`E:${"f".repeat(257)}:PROCESS:main:2:R`)).toEqual(["address.flow_id"]);
    expect(field("E:F:PROCESS:main:2:R:")).toEqual(["address.additional_info"]);
    expect(field("E\u0000:F:PROCESS:main:2:R")).toEqual(["address.execution_id"]);
  });

  it("relates branches by path, not by string prefix", () => {
    expect(isWithin("main.a.b", "main.a")).toBe(true);
    expect(isWithin("main.a", "main.a")).toBe(true);
    expect(isWithin("main.ab", "main.a")).toBe(false);
    expect(isWithin("main", "main.a")).toBe(false);
  });
});
