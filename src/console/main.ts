/**
 * The mesh's web console: four live panels over the mesh's own services,
 * called with Connect-web from the page's origin. Browsers speak HTTP/1.1
 * to the mesh (they never use cleartext HTTP/2), so each open stream holds
 * one of the browser's six connections to the origin: the page keeps at
 * most four streams open (health, services, one execution's memory, the
 * feed) and leaves the rest for unary calls.
 */
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { DataStoreService } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { MessageBusService } from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import type { ServingStatus } from "../../gen/floworchestrator/telemetry/v1/telemetry_pb.js";
import { TelemetryService } from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import { badge, h } from "./dom.js";
import { feedPanel } from "./feed.js";
import { healthPanel, statusBadge } from "./health.js";
import { memoryPanel } from "./memory.js";
import { servicesPanel } from "./services.js";
import "./style.css";

/**
 * With authentication on (FO_AUTH_TOKENS_FILE), every call carries the
 * bearer token the user entered; it lives in this tab's sessionStorage only.
 */
const TOKEN_KEY = "fo-console-token";
const token = () => sessionStorage.getItem(TOKEN_KEY) ?? "";
const transport = createConnectTransport({
  baseUrl: location.origin,
  interceptors: [
    (next) => (req) => {
      if (token() !== "") req.header.set("authorization", `Bearer ${token()}`);
      return next(req);
    },
  ],
});

const tokenInput = h("input", {
  type: "password",
  class: "token-input",
  placeholder: "bearer token",
  "aria-label": "bearer token",
  autocomplete: "off",
}) as HTMLInputElement;
tokenInput.value = token();
const tokenForm = h(
  "form",
  { class: "token-form", title: "sent as authorization: Bearer … when the mesh requires it" },
  tokenInput,
  h("button", { type: "submit" }, "Use token"),
);
tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
  // Streams were opened with the old credentials: start over with the new ones.
  location.reload();
});

const overall = h("span", { class: "header-status", "aria-live": "polite" });
const showOverall = (status: ServingStatus | undefined) => {
  overall.replaceChildren(
    status === undefined
      ? badge("DISCONNECTED", "bad", { id: "header-health" })
      : statusBadge(status, { id: "header-health" }),
  );
};
showOverall(undefined);

const app = h(
  "div",
  { class: "app" },
  h(
    "header",
    { class: "topbar" },
    h(
      "div",
      { class: "brand" },
      h("span", { class: "logo", "aria-hidden": "true" }),
      h("div", {}, h("h1", {}, "FlowOrchestrator Mesh"), h("p", { class: "dim" }, "Web console")),
    ),
    h(
      "div",
      { class: "topbar-right" },
      h("span", { class: "mono dim", title: "the mesh this console talks to" }, location.host),
      tokenForm,
      overall,
    ),
  ),
  h(
    "main",
    { class: "grid" },
    healthPanel(createClient(TelemetryService, transport), showOverall),
    servicesPanel(createClient(DataStoreService, transport)),
    memoryPanel(createClient(MemoryManagerService, transport)),
    feedPanel(createClient(MessageBusService, transport)),
  ),
  h(
    "footer",
    { class: "footer dim" },
    "Live over Connect-web (HTTP/1.1) · streams reconnect by themselves",
  ),
);

document.body.replaceChildren(app);
