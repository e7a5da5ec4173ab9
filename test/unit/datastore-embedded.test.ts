// The DataStore conformance suite on the embedded store: each layer the suite
// builds gets a fresh directory of its own.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll } from "@effect/vitest";
import { EmbeddedStore } from "../../src/datastore/embedded.js";
import { dataStoreConformance } from "../conformance/datastore.suite.js";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "fo-datastore-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

dataStoreConformance("DataStore on the embedded store", () =>
  EmbeddedStore.layer({ dir: fs.mkdtempSync(path.join(root, "store-")) }),
);
