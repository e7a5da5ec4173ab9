/**
 * A single-node KRaft broker of a test's own (the shared one must stay up
 * for the others): formatted in a temporary directory, started and killed
 * (by its PID) at will, on ports of its own on 127.0.0.1; jars from the
 * shared broker's provisioning (test/infra). Released with its scope.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect } from "effect";
import { Kafka, logLevel } from "kafkajs";
import { cacheDir } from "../infra/index.js";
import { freePort, run } from "../infra/process.js";
import { killableServer } from "./killable.js";

/**
 * A single-node KRaft broker of this test's own (the shared one must stay
 * up for the others): formatted in a temporary directory, started and
 * killed (by its PID) at will, on ports of its own on 127.0.0.1; jars from
 * the shared broker's provisioning.
 */
export const privateBroker = Effect.acquireRelease(
  Effect.promise(async () => {
    const dir = await mkdtemp(join(tmpdir(), "fo-kafka-"));
    const [port, controllerPort] = [await freePort(), await freePort()];
    const props = join(dir, "server.properties");
    const log4j = join(dir, "log4j2.xml");
    await writeFile(
      props,
      [
        "process.roles=broker,controller",
        "node.id=1",
        `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
        `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
        `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        `log.dirs=${join(dir, "data")}`,
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        // Restarted after a kill, the node waits out its previous registration.
        "broker.session.timeout.ms=2000",
        "broker.heartbeat.interval.ms=500",
        "",
      ].join("\n"),
    );
    await writeFile(
      log4j,
      `<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="out"/></Root></Loggers>
</Configuration>
`,
    );
    const logFile = join(dir, "server.log");
    const jvm = [
      "-Xms128m",
      "-Xmx256m",
      "-Djava.awt.headless=true",
      "-Djava.net.preferIPv4Stack=true",
      `-Dlog4j2.configurationFile=${log4j}`,
      `-Dkafka.logs.dir=${join(dir, "logs")}`,
      "-cp",
      `${join(cacheDir, "kafka", "libs")}/*`,
    ];
    await run(
      "java",
      [
        ...jvm,
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        randomUUID().replaceAll("-", "").slice(0, 22),
        "--config",
        props,
      ],
      { cwd: dir, logFile, timeoutMs: 120_000 },
    );
    const address = `127.0.0.1:${port}`;
    const ready = async () => {
      const admin = new Kafka({
        clientId: "private-broker-probe",
        brokers: [address],
        connectionTimeout: 1_000,
        retry: { retries: 0 },
        logLevel: logLevel.NOTHING,
      }).admin();
      try {
        await admin.connect();
        const cluster = await admin.describeCluster();
        await admin.describeGroups(["probe"]);
        return cluster.controller !== null;
      } finally {
        await admin.disconnect();
      }
    };
    const server = killableServer({
      name: "kafka (private)",
      command: "java",
      args: [...jvm, "kafka.Kafka", props],
      cwd: dir,
      logFile,
      ready,
      timeoutMs: 60_000,
      intervalMs: 200,
    });
    return { address, dir, ...server };
  }),
  (broker) =>
    Effect.promise(async () => {
      await broker.kill();
      await rm(broker.dir, { recursive: true, force: true });
    }),
);
