/** Input checks: any JSON is either accepted or refused field by field, never a crash. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Json } from "../../src/common/json.js";
import { document, identifier, labels } from "../../src/common/validate.js";

describe("document", () => {
  it("accepts or names the bad fields of any JSON value, without throwing", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (value) => {
        const violations = document("document", value as Json, 1024 * 1024);
        for (const v of violations) expect(v.field.startsWith("document")).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it("refuses operator-like and dotted keys, deep nesting and oversize documents", () => {
    expect(document("d", { $where: "1" }, 1000)[0]?.field).toBe("d.$where");
    expect(document("d", { a: { "b.c": 1 } }, 1000)[0]?.field).toBe("d.a.b.c");
    let deep: Json = 1;
    for (let i = 0; i < 70; i++) deep = { x: deep };
    expect(document("d", deep, 1_000_000)[0]?.description).toContain("deeper than 64");
    expect(document("d", { s: "x".repeat(2000) }, 1000)[0]?.description).toContain(
      "more than the limit",
    );
    expect(document("d", { ok: [1, { fine: true }] }, 1000)).toEqual([]);
  });
});

describe("identifier and labels", () => {
  it("bound identifiers and keep ':' and control characters out", () => {
    expect(identifier("id", "")).toHaveLength(1);
    expect(identifier("id", "a".repeat(257))).toHaveLength(1);
    expect(identifier("id", "a:b")).toHaveLength(1);
    expect(identifier("id", "a\u0000b")).toHaveLength(1);
    expect(identifier("id", "EXEC-123")).toEqual([]);
  });

  it("check every label key and value", () => {
    expect(labels("labels", { env: "prod", "app.kubernetes.io/name": "x" })).toEqual([]);
    expect(labels("labels", { "bad key": "v", ok: "x".repeat(300) }).map((v) => v.field)).toEqual([
      'labels["bad key"]',
      'labels["ok"]',
    ]);
  });
});
