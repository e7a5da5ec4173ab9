/**
 * Prints one plain closing line, `tests: N passed, N failed, N skipped`, after
 * Vitest's own report, so CI logs can be read without knowing Vitest's format.
 * Failures outside tests (hooks, unhandled errors) count as failed too.
 */
import type { Reporter, TestModule } from "vitest/node";

export default class SummaryReporter implements Reporter {
  private counts = { passed: 0, failed: 0, skipped: 0, pending: 0 };

  onTestRunEnd(modules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>) {
    for (const module of modules) {
      const before = this.counts.failed;
      for (const test of module.children.allTests()) this.counts[test.result().state]++;
      // A file that failed outside any test (a hook, an import) counts as one failure.
      if (module.state() === "failed" && this.counts.failed === before) this.counts.failed++;
    }
    this.counts.failed += unhandledErrors.length;
  }

  /** Runs after every reporter's onTestRunEnd, so this line comes last. */
  onFinished() {
    const { passed, failed, skipped } = this.counts;
    process.stdout.write(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
