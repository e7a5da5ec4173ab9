// The DataStore conformance suite on MongoDB (FerretDB from test/infra), in a
// database of its own per run, dropped afterwards. Needs
// test/infra/global-setup.ts as globalSetup (it provides "infra").
import { randomUUID } from "node:crypto";
import { afterAll, inject } from "@effect/vitest";
import { MongoClient } from "mongodb";
import { MongoStore } from "../../src/datastore/mongodb.js";
import { dataStoreConformance } from "../conformance/datastore.suite.js";

const { mongodbUri } = inject("infra");
const database = `ds_conformance_${randomUUID().replaceAll("-", "").slice(0, 12)}`;

afterAll(async () => {
  const client = new MongoClient(mongodbUri, { serverSelectionTimeoutMS: 10_000 });
  try {
    await client.db(database).dropDatabase();
  } finally {
    await client.close();
  }
});

dataStoreConformance("DataStore on MongoDB (FerretDB)", () =>
  MongoStore.layer({ uri: mongodbUri, database }),
);
