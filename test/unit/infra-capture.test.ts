/**
 * `capture` (test/infra) hands back everything a command wrote and how it
 * ended. Provisioning parses what `go mod download -json` prints, and once
 * (a fresh-clone CI run, the machine loaded) read it empty: the result was
 * taken on the process's "exit", which Node may emit before the output
 * pipes are read to the end; it is taken on "close" now. That ordering is
 * the scheduler's and cannot be forced here; what is held is the output of
 * a command that writes far more than a pipe buffers, whole, every time.
 */
import { describe, expect, it } from "@effect/vitest";
import { capture } from "../infra/process.js";

describe("capture", () => {
  it("returns the whole output of a command that exits at once", async () => {
    const lines = 1_000_000;
    // One large write, then the end of the script: the process exits once the pipe took it all.
    const script = `process.stdout.write(JSON.stringify({ Dir: "x".repeat(${lines}) }) + "\\n")`;
    for (let run = 0; run < 20; run++) {
      const out = await capture(process.execPath, ["-e", script]);
      expect(JSON.parse(out)).toEqual({ Dir: "x".repeat(lines) });
    }
  });

  it("rejects with the output when the command fails", async () => {
    await expect(
      capture(process.execPath, ["-e", "console.error('went wrong'); process.exit(3)"]),
    ).rejects.toThrow(/exited with code 3: went wrong/);
  });
});
