/** Component health: `TelemetryService.WatchHealth`, a snapshot then changes. */
import type { Client } from "@connectrpc/connect";
import {
  type ComponentHealth,
  ServingStatus,
} from "../../gen/floworchestrator/telemetry/v1/telemetry_pb.js";
import {
  WatchHealthResponse_Type as EventType,
  type TelemetryService,
} from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import { badge, card, empty, fill, h, type Tone, table } from "./dom.js";
import { duration, enumLabel, shortName, time } from "./format.js";
import { keepStreaming, streamBadge } from "./stream.js";

const tone = (status: ServingStatus): Tone =>
  status === ServingStatus.SERVING ? "ok" : status === ServingStatus.NOT_SERVING ? "bad" : "muted";

export const statusBadge = (status: ServingStatus, attrs = {}) =>
  badge(enumLabel(ServingStatus, status), tone(status), attrs);

/**
 * @param onOverall told the mesh's overall status (the page header shows it);
 *   `undefined` while the stream is down.
 */
export const healthPanel = (
  client: Client<typeof TelemetryService>,
  onOverall: (status: ServingStatus | undefined) => void,
) => {
  const { root, actions, body } = card(
    "health",
    "Health",
    "Components of this mesh and their backends",
  );
  const state = streamBadge("health");
  actions.append(state.root);

  const components = new Map<string, ComponentHealth>();
  let overall: ServingStatus | undefined;
  let lastEvent: Date | undefined;

  const render = () => {
    if (overall === undefined && components.size === 0) {
      fill(body, empty("Waiting for the mesh…"));
      return;
    }
    const rows = [...components.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((c) =>
        h(
          "tr",
          { "data-component": c.name },
          h(
            "td",
            {},
            // The full name (the one grpc.health.v1 answers for) on hover: the short one fits.
            h(
              "div",
              { class: "strong", title: c.name === "" ? "the whole mesh" : c.name },
              c.name === "" ? "mesh" : shortName(c.name),
            ),
            // A failed check is kept after recovery: worth a line, in red while it still fails.
            c.lastError
              ? h(
                  "div",
                  { class: `small ${c.status === ServingStatus.SERVING ? "dim" : "error-text"}` },
                  `Last error ${time(c.lastErrorTime)}: ${c.lastError}`,
                )
              : null,
          ),
          h("td", {}, statusBadge(c.status)),
          h(
            "td",
            { class: "nowrap" },
            c.lastCheckTime
              ? h(
                  "span",
                  {},
                  time(c.lastCheckTime),
                  h("span", { class: "dim small" }, ` · ${duration(c.lastCheckLatency)}`),
                )
              : h("span", { class: "dim small" }, "no backend check"),
          ),
        ),
      );
    fill(
      body,
      h(
        "div",
        { class: "overall" },
        h("span", { class: "overall-label" }, "Overall"),
        overall === undefined
          ? badge("UNKNOWN", "muted", { id: "overall-health" })
          : statusBadge(overall, { id: "overall-health" }),
        h("span", { class: "dim" }, lastEvent ? `as of ${time(lastEvent)}` : ""),
      ),
      table(["Component", "Status", "Last check"], rows, "health-table"),
    );
  };

  render();
  keepStreaming({
    open: (signal) => client.watchHealth({}, { signal }),
    onState: (s) => {
      state.set(s);
      if (s.kind !== "live") onOverall(undefined);
      else onOverall(overall);
    },
    onMessage: (event) => {
      if (event.type === EventType.SNAPSHOT) components.clear();
      for (const c of event.components) components.set(c.name, c);
      overall = event.status;
      lastEvent = new Date();
      onOverall(overall);
      render();
    },
  });
  return root;
};
