/** Registered services: `DataStoreService.WatchServices`, a snapshot then every change. */
import type { Client } from "@connectrpc/connect";
import type { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import {
  ServiceEvent_Type as EventType,
  ServiceHealth,
  type ServiceRecord,
  ServiceStatus,
} from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
import { badge, card, empty, fill, h, type Tone, table } from "./dom.js";
import { enumLabel, time } from "./format.js";
import { keepStreaming, streamBadge } from "./stream.js";

const statusTone: Record<ServiceStatus, Tone> = {
  [ServiceStatus.UNSPECIFIED]: "muted",
  [ServiceStatus.UNINITIALIZED]: "muted",
  [ServiceStatus.INITIALIZED]: "info",
  [ServiceStatus.READY]: "ok",
  [ServiceStatus.PROCESSING]: "info",
  [ServiceStatus.ERROR]: "bad",
  [ServiceStatus.TERMINATED]: "muted",
};

const healthTone = (health: ServiceHealth): Tone =>
  health === ServiceHealth.HEALTHY ? "ok" : health === ServiceHealth.EXPIRED ? "bad" : "muted";

/** What the recent-changes line says about an event. */
const verbs: Partial<Record<EventType, string>> = {
  [EventType.REGISTERED]: "registered",
  [EventType.UPDATED]: "updated",
  [EventType.STATUS_CHANGED]: "changed status",
  [EventType.EXPIRED]: "lease expired",
  [EventType.RENEWED]: "renewed",
  [EventType.DEREGISTERED]: "deregistered",
};

const keyOf = (s: ServiceRecord) => `${s.serviceId}@${s.version}`;

/** How many recent changes the panel lists under the table. */
const RECENT = 5;

export const servicesPanel = (client: Client<typeof DataStoreService>) => {
  const { root, actions, body } = card(
    "services",
    "Services",
    "The service registry, live (DataStoreService.WatchServices)",
  );
  const count = h("span", { class: "count" });
  const state = streamBadge("services");
  actions.append(count, state.root);

  let services = new Map<string, ServiceRecord>();
  // The snapshot of the current connection, swapped in once complete (no flicker on reconnect).
  let snapshot: Map<string, ServiceRecord> | undefined;
  let loaded = false;
  const recent: Array<{ at: Date; text: string; key: string }> = [];
  let changed: string | undefined;

  const row = (s: ServiceRecord) => {
    const key = keyOf(s);
    return h(
      "tr",
      { "data-service": key, class: key === changed ? "flash" : undefined },
      h(
        "td",
        {},
        h("div", { class: "strong nowrap" }, s.serviceId),
        s.statusReason ? h("div", { class: "dim small" }, s.statusReason) : null,
      ),
      h("td", {}, h("span", { class: "chip" }, s.serviceType)),
      h("td", { class: "mono" }, s.version),
      h("td", {}, badge(enumLabel(ServiceStatus, s.status), statusTone[s.status])),
      h(
        "td",
        { class: "nowrap" },
        badge(enumLabel(ServiceHealth, s.health), healthTone(s.health)),
        h("div", { class: "dim small" }, `lease until ${time(s.leaseExpireTime)}`),
      ),
      h(
        "td",
        { class: "mono small" },
        s.endpoints.length ? s.endpoints.join(", ") : h("span", { class: "dim" }, "—"),
      ),
    );
  };

  const render = () => {
    count.textContent = loaded ? `${services.size} registered` : "";
    if (!loaded) {
      fill(body, empty("Loading the registry…"));
      return;
    }
    const list = [...services.values()].sort(
      (a, b) =>
        a.serviceType.localeCompare(b.serviceType) ||
        a.serviceId.localeCompare(b.serviceId) ||
        a.version.localeCompare(b.version),
    );
    fill(
      body,
      list.length === 0
        ? empty(
            "No services registered yet.",
            "Components register with DataStoreService.RegisterService and show up here at once.",
          )
        : table(
            ["Service", "Type", "Version", "Status", "Health", "Endpoints"],
            list.map(row),
            "services-table",
          ),
      recent.length
        ? h(
            "ul",
            { class: "recent", "aria-label": "Recent changes" },
            ...recent.map((r) =>
              h(
                "li",
                {},
                h("span", { class: "dim" }, time(r.at)),
                " ",
                h("span", { class: "mono" }, r.key),
                ` ${r.text}`,
              ),
            ),
          )
        : null,
    );
  };

  render();
  keepStreaming({
    open: (signal) => client.watchServices({}, { signal }),
    onState: state.set,
    onConnect: () => {
      snapshot = new Map();
    },
    onMessage: ({ event }) => {
      if (event === undefined) return;
      const s = event.service;
      switch (event.type) {
        case EventType.SNAPSHOT:
          if (s) snapshot?.set(keyOf(s), s);
          return;
        case EventType.SNAPSHOT_COMPLETE:
          services = snapshot ?? new Map();
          snapshot = undefined;
          loaded = true;
          changed = undefined;
          render();
          return;
        case EventType.HEARTBEAT:
          return;
        default: {
          if (s === undefined) return;
          const key = keyOf(s);
          if (event.type === EventType.DEREGISTERED) services.delete(key);
          else services.set(key, s);
          changed = key;
          recent.unshift({ at: new Date(), key, text: verbs[event.type] ?? "changed" });
          recent.length = Math.min(recent.length, RECENT);
          render();
        }
      }
    },
  });
  return root;
};
