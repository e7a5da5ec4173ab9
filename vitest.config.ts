import { defineConfig } from "vitest/config";

/**
 * Four tiers: unit (in-process, in-memory transports), e2e (a real server on
 * port 0, called over every protocol and by CLI tools), interop (real clients
 * in other languages and a real browser against a mesh on embedded backends;
 * each file provisions its toolchain into the git-ignored cache first),
 * integration (real backends started by test/infra before the suite), faults
 * (private backends killed and restarted under load; test/infra provisions them).
 */
export default defineConfig({
  test: {
    reporters: ["default", "./test/support/summary-reporter.ts"],
    projects: [
      { test: { name: "unit", include: ["test/unit/**/*.test.ts"] } },
      {
        test: { name: "e2e", include: ["test/e2e/**/*.test.ts"], testTimeout: 30_000 },
      },
      {
        test: {
          name: "interop",
          include: ["test/interop/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 900_000,
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          globalSetup: ["test/infra/global-setup.ts"],
          testTimeout: 60_000,
          hookTimeout: 900_000,
        },
      },
      {
        // Each file kills a backend of its own (never the shared ones) under
        // load: one file at a time, so their timings do not compete for CPUs.
        test: {
          name: "faults",
          include: ["test/faults/**/*.test.ts"],
          globalSetup: ["test/infra/global-setup.ts"],
          testTimeout: 180_000,
          hookTimeout: 900_000,
          poolOptions: { forks: { singleFork: true } },
        },
      },
    ],
  },
});
