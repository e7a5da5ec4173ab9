// Proves each real backend from Node through its production driver. Needs
// test/infra/global-setup.ts as globalSetup (it provides "infra").
import { randomUUID } from "node:crypto";
import { Client } from "hazelcast-client";
import { Kafka, logLevel, Partitioners } from "kafkajs";
import { MongoClient } from "mongodb";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { hazelcastClientConfig } from "../infra/hazelcast.js";
import type { InfraAddresses } from "../infra/index.js";

const infra: InfraAddresses = inject("infra");
// Unique per run so reruns against long-lived backends never see old data.
const suiteId = `smoke_${randomUUID().replaceAll("-", "").slice(0, 12)}`;

describe("FerretDB via the mongodb driver", () => {
  const client = new MongoClient(infra.mongodbUri, { serverSelectionTimeoutMS: 10_000 });
  const db = client.db(suiteId);

  afterAll(async () => {
    await db.dropDatabase().catch(() => {});
    await client.close();
  });

  it("inserts and finds a document", async () => {
    const token = randomUUID();
    const items = db.collection<{ token: string; n: number }>("items");
    const inserted = await items.insertOne({ token, n: 42 });
    expect(inserted.acknowledged).toBe(true);

    const found = await items.find({ token }).toArray();
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ _id: inserted.insertedId, token, n: 42 });
    expect(await items.countDocuments({ token: "no-such-token" })).toBe(0);
  });
});

describe("Kafka via kafkajs", () => {
  const kafka = new Kafka({
    clientId: suiteId,
    brokers: infra.kafkaBrokers,
    logLevel: logLevel.ERROR,
  });
  const topic = `${suiteId}.events`;
  const admin = kafka.admin();
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  const consumer = kafka.consumer({ groupId: `${suiteId}.group` });

  beforeAll(async () => {
    await admin.connect();
    // Created up front (not auto-created on first produce) so the consumer
    // never races topic metadata.
    await admin.createTopics({
      topics: [{ topic, numPartitions: 1, replicationFactor: 1 }],
      waitForLeaders: true,
    });
  });

  afterAll(async () => {
    await consumer.disconnect();
    await producer.disconnect();
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin.disconnect();
  });

  it("produces and consumes a message", async () => {
    const value = randomUUID();
    await producer.connect();
    const [meta] = await producer.send({ topic, messages: [{ key: "k", value }] });
    expect(meta?.errorCode).toBe(0);

    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const received = new Promise<{ key: string; value: string }>((resolve) => {
      void consumer.run({
        eachMessage: async ({ message }) => {
          resolve({ key: message.key?.toString() ?? "", value: message.value?.toString() ?? "" });
        },
      });
    });
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error("no message consumed within 45s")), 45_000).unref(),
    );
    await expect(Promise.race([received, timeout])).resolves.toEqual({ key: "k", value });
  });
});

describe("Hazelcast via hazelcast-client", () => {
  let client: Client | undefined;
  const mapName = `${suiteId}.map`;

  beforeAll(async () => {
    client = await Client.newHazelcastClient(hazelcastClientConfig(infra.hazelcastMembers));
  });

  afterAll(async () => {
    if (client === undefined) return;
    await (await client.getMap(mapName)).destroy().catch(() => {});
    await client.shutdown();
  });

  it("puts and gets a map entry", async () => {
    if (client === undefined) throw new Error("hazelcast client not connected");
    const map = await client.getMap<string, { token: string }>(mapName);
    const token = randomUUID();
    expect(await map.put("key", { token })).toBeNull();
    expect(await map.get("key")).toEqual({ token });
    expect(await map.size()).toBe(1);
    expect(await map.get("missing")).toBeNull();
  });
});
