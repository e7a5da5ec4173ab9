/**
 * A Hazelcast member of a test's own (the shared one must stay up for the
 * others): the jar the shared provisioning fetched (test/infra/hazelcast.ts),
 * the same settings (loopback only, no discovery beyond itself, phone-home
 * off), a port and a cluster name of its own so it can never join the shared
 * member. No persistence and no backups (a single member): data lives in its
 * heap only, so a kill loses it. Killed (SIGKILL, by its PID) and started
 * again at will; released with its scope.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Effect } from "effect";
import { ADD_OPENS, memberConfig, probeMember } from "../infra/hazelcast.js";
import { cacheDir } from "../infra/index.js";
import { freePort, host, portInUse } from "../infra/process.js";
import { killableServer } from "./killable.js";

const libDir = join(cacheDir, "hazelcast", "libs");

export interface PrivateHazelcast {
  /** `127.0.0.1:<port>`. */
  readonly address: string;
  readonly clusterName: string;
  readonly dir: string;
  readonly logFile: string;
  readonly pid: () => number | undefined;
  /** Starts the member (empty); resolves once a client can put and get (fails with its log tail). */
  readonly start: () => Promise<void>;
  /** SIGKILL by PID; resolves once it exited. */
  readonly kill: () => Promise<void>;
}

// Warnings and above: a log tail that shows what went wrong.
const LOGGING_PROPERTIES = `handlers=java.util.logging.ConsoleHandler
.level=WARNING
com.hazelcast.core.LifecycleService.level=INFO
java.util.logging.ConsoleHandler.level=ALL
java.util.logging.SimpleFormatter.format=[%1$tF %1$tT] %4$s %3$s: %5$s%6$s%n
`;

const probe = async (address: string, clusterName: string) =>
  (await portInUse(Number(address.split(":")[1]))) && probeMember(address, clusterName);

export const privateHazelcast = Effect.acquireRelease(
  Effect.promise(async (): Promise<PrivateHazelcast> => {
    if (!existsSync(join(libDir, "hazelcast-5.6.0.jar"))) {
      throw new Error(
        `[hazelcast-member] no Hazelcast jar in ${libDir}: run \`npm run infra:up\` (or the faults/integration tier, whose global setup provisions it)`,
      );
    }
    const dir = await mkdtemp(join(tmpdir(), "fo-hazelcast-"));
    const port = await freePort();
    const address = `${host}:${port}`;
    const clusterName = `faults-${randomBytes(4).toString("hex")}`;
    const configFile = join(dir, "hazelcast.xml");
    const loggingFile = join(dir, "logging.properties");
    const logFile = join(dir, "server.log");
    await writeFile(configFile, memberConfig(port, clusterName));
    await writeFile(loggingFile, LOGGING_PROPERTIES);
    const server = killableServer({
      name: "hazelcast (private)",
      command: "java",
      args: [
        "-Xms64m",
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        ...ADD_OPENS,
        "-Djava.net.preferIPv4Stack=true",
        "-Dhazelcast.phone.home.enabled=false",
        `-Dhazelcast.config=${configFile}`,
        "-Dhazelcast.logging.type=jdk",
        `-Djava.util.logging.config.file=${loggingFile}`,
        "-cp",
        `${libDir}/*`,
        "com.hazelcast.core.server.HazelcastMemberStarter",
      ],
      cwd: dir,
      env: { ...process.env, HZ_PHONE_HOME_ENABLED: "false" },
      logFile,
      ready: () => probe(address, clusterName),
      timeoutMs: 60_000,
      intervalMs: 250,
    });

    return { address, clusterName, dir, logFile, ...server };
  }),
  (member) =>
    Effect.promise(async () => {
      await member.kill();
      await rm(member.dir, { recursive: true, force: true });
    }),
);
