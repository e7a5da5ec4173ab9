// Vitest globalSetup: brings the real backends up once per run and hands
// their addresses to tests via `inject("infra")`. Backends that were already
// running (e.g. from `npm run infra:up`) are reused and left running.
import type { TestProject } from "vitest/node";
import { down, upDetailed } from "./index.js";

export default async function setup(project: TestProject) {
  const log = (line: string) => console.log(line);
  let result: Awaited<ReturnType<typeof upDetailed>>;
  try {
    result = await upDetailed({ log });
  } catch (err) {
    // The message carries each failing backend's name and log tail; print it
    // in full as well, since runners sometimes truncate setup errors.
    console.error((err as Error).message);
    throw err;
  }
  project.provide("infra", result.addresses);

  return async () => {
    if (result.started.length > 0) await down({ only: result.started, log });
  };
}
