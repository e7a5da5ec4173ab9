import { defineConfig } from "vitest/config";

/**
 * Four tiers: unit (in-process, in-memory transports), e2e (a real server on
 * port 0, called over every protocol and by CLI tools), interop (real clients
 * in other languages and a real browser against a mesh on embedded backends;
 * each file provisions its toolchain into the git-ignored cache first),
 * integration (real backends started by test/infra before the suite).
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
    ],
  },
});
