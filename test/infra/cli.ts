// `npm run infra:up | infra:down | infra:status`.
// `up` leaves the servers running (they are detached) and exits.
import { cacheDir, down, infraAddresses, prometheusStatus, status, up } from "./index.js";

const log = (line: string) => console.error(line);

async function main(command: string | undefined): Promise<number> {
  switch (command) {
    case "up": {
      const started = Date.now();
      const addresses = await up({ log });
      log(`[infra] up in ${((Date.now() - started) / 1000).toFixed(1)}s (cache: ${cacheDir})`);
      console.log(JSON.stringify(addresses, null, 2));
      return 0;
    }
    case "down":
      await down({ log });
      return 0;
    case "status": {
      const all = await status();
      for (const s of all) {
        const state = s.running ? (s.ready ? "ready" : "running, NOT ready") : "stopped";
        console.log(
          `${s.name.padEnd(10)} ${state.padEnd(18)} pid=${s.pid ?? "-"} port=${s.port} log=${s.logFile}`,
        );
      }
      // Provisioned only; test instances are started (and stopped) by tests.
      const prom = await prometheusStatus();
      const state = prom.provisioned ? "provisioned" : "not provisioned";
      console.log(
        `${"prometheus".padEnd(10)} ${state.padEnd(18)} test instances=${prom.running.length === 0 ? "-" : prom.running.join(",")} bin=${infraAddresses().prometheus.bin}`,
      );
      return 0;
    }
    default:
      console.error("usage: tsx test/infra/cli.ts up|down|status");
      return 2;
  }
}

main(process.argv[2]).then(
  // Explicit exit: client libraries can leave timers behind, and the
  // servers are detached, so nothing here needs to keep running.
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
