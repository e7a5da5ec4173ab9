// The MemoryManager conformance suite on Hazelcast (the member test/infra
// starts). Each run uses maps of its own (a random prefix), destroyed
// afterwards, so runs can share the cluster. Needs
// test/infra/global-setup.ts as globalSetup (it provides "infra").
import { randomBytes } from "node:crypto";
import { afterAll, inject } from "@effect/vitest";
import { Context, Effect, Layer, Schedule } from "effect";
import { Client } from "hazelcast-client";
import { HazelcastMemoryStore } from "../../src/memory/hazelcast.js";
import { MemoryStore } from "../../src/memory/store.js";
import { memoryManagerConformance } from "../conformance/memory.suite.js";
import { HAZELCAST_CLUSTER, hazelcastClientConfig } from "../infra/hazelcast.js";

const { hazelcastMembers } = inject("infra");
const mapPrefix = `mm_${randomBytes(5).toString("hex")}_`;

afterAll(async () => {
  const client = await Client.newHazelcastClient(hazelcastClientConfig(hazelcastMembers));
  try {
    for (const map of ["meta", "data", "branches", "locks"]) {
      await (await client.getMap(`${mapPrefix}${map}`)).destroy();
    }
  } finally {
    await client.shutdown();
  }
});

/**
 * The store starts without waiting for the cluster (calls are UNAVAILABLE
 * until the client has connected): the suite starts once it answers.
 */
const connected = HazelcastMemoryStore.layer({
  members: hazelcastMembers,
  clusterName: HAZELCAST_CLUSTER,
  mapPrefix,
}).pipe(
  Layer.tap((context) =>
    Context.get(context, MemoryStore).ping.pipe(
      Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("20 seconds"))),
    ),
  ),
);

memoryManagerConformance("MemoryManager on Hazelcast", () => connected);
