/**
 * A live feed of events of chosen types: `MessageBusService.Subscribe` with
 * the console's own consumer group, every delivery acknowledged (the
 * subscription stops delivering when `max_in_flight` deliveries are not),
 * and a button that publishes a test event with `PublishEvent`.
 */
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import {
  type MessageBusService,
  StartPosition,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import type { Delivery } from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { badge, card, empty, fill, h, table } from "./dom.js";
import { errorText, preview, time } from "./format.js";
import { getParam, setParam } from "./hash.js";
import { keepStreaming, streamBadge } from "./stream.js";

/** Messages kept on screen, newest first. */
const KEEP = 100;
/** Most delivery ids one Ack call carries (the RPC's limit). */
const ACK_BATCH = 1000;
const DEFAULT_TYPE = "floworchestrator.console.TestEvent";
const TYPE_PATTERN = /^[A-Za-z0-9._-]{1,180}$/;

/**
 * One consumer group per browser tab, kept across reloads of the tab: two
 * tabs each see every event (a shared group would split them), and a reload
 * resumes where the tab left off instead of creating yet another group.
 */
const consoleGroup = () => {
  const saved = sessionStorage.getItem("fo-console-group");
  if (saved) return saved;
  const group = `fo-console-${crypto.randomUUID().slice(0, 8)}`;
  sessionStorage.setItem("fo-console-group", group);
  return group;
};

export const feedPanel = (client: Client<typeof MessageBusService>) => {
  const { root, actions, body } = card(
    "feed",
    "Message feed",
    "Events delivered to this console's consumer group (MessageBusService.Subscribe)",
  );
  const group = consoleGroup();
  const state = streamBadge("feed");
  actions.append(h("span", { class: "chip mono", title: "consumer group" }, group), state.root);

  const typesInput = h("input", {
    id: "event-types",
    name: "types",
    value: getParam("events") ?? DEFAULT_TYPE,
    placeholder: "Event types, comma-separated",
    autocomplete: "off",
    spellcheck: "false",
    "aria-label": "Event types",
  });
  const subscribe = h("button", { type: "submit" }, "Subscribe");
  const payloadInput = h("input", {
    id: "test-payload",
    name: "payload",
    value: '{"hello":"from the console"}',
    spellcheck: "false",
    "aria-label": "Test event payload (JSON)",
  });
  const publish = h(
    "button",
    { type: "button", class: "primary", id: "publish" },
    "Publish test event",
  );
  const note = h("div", { class: "note", role: "status" });
  const topics = h("div", { class: "dim small" });
  const list = h("div", { class: "feed-list" });

  fill(
    body,
    h(
      "div",
      { class: "feed-controls" },
      h(
        "form",
        { class: "inline-form", id: "feed-form" },
        h("label", { for: "event-types" }, "Event types"),
        typesInput,
        subscribe,
      ),
      h(
        "div",
        { class: "inline-form" },
        h("label", { for: "test-payload" }, "Payload"),
        payloadInput,
        publish,
      ),
    ),
    h("div", { class: "feed-status" }, topics, note),
    list,
  );

  const messages: Delivery[] = [];
  const seen = new Map<string, Delivery>();
  let fresh: string | undefined;

  const row = (d: Delivery) => {
    const m = d.message;
    const text = preview(m?.payload ?? new Uint8Array(), m?.contentType ?? "", 400);
    return h(
      "tr",
      {
        "data-message-id": m?.messageId ?? "",
        "data-type": m?.messageType ?? "",
        class: m?.messageId === fresh ? "flash" : undefined,
      },
      h("td", { class: "nowrap" }, time(m?.time)),
      h("td", { class: "mono", title: m?.messageType ?? "" }, m?.messageType ?? ""),
      h("td", { class: "mono small", title: text }, text),
      h("td", { title: m?.source ?? "" }, m?.source ?? ""),
      h("td", { class: "mono small", title: m?.messageId ?? "" }, (m?.messageId ?? "").slice(0, 8)),
      h(
        "td",
        { class: "nowrap" },
        d.attempt > 1 ? badge(`attempt ${d.attempt}`, "warn") : badge("first", "muted"),
      ),
      h(
        "td",
        { class: "mono small nowrap", title: `topic ${d.topic}` },
        `p${d.partition} · #${d.offset}`,
      ),
    );
  };

  const render = () => {
    fill(
      list,
      messages.length === 0
        ? empty(
            "No events yet.",
            "Publish a test event, or publish events of these types from any client.",
          )
        : table(
            ["Sent", "Type", "Payload", "Source", "Id", "Delivery", "Partition"],
            messages.map(row),
            "feed-table",
          ),
    );
  };

  // Acknowledgements: batched, one call in flight at a time.
  const pending: string[] = [];
  let acking = false;
  const flushAcks = async () => {
    if (acking || pending.length === 0) return;
    acking = true;
    const ids = pending.splice(0, ACK_BATCH);
    try {
      await client.ack({ deliveryId: ids[0], deliveryIds: ids.slice(1) });
    } catch (e) {
      // NOT_FOUND: the subscription that delivered them is gone (a reconnect);
      // they come again to the new one. Anything else is worth saying.
      if (ConnectError.from(e).code !== Code.NotFound)
        note.textContent = `Ack failed: ${errorText(e)}`;
    } finally {
      acking = false;
      void flushAcks();
    }
  };

  const onDelivery = (d: Delivery) => {
    const id = d.message?.messageId ?? d.deliveryId;
    const known = seen.get(id);
    if (known) {
      // A redelivery (after a reconnect or a missed ack): one row per message.
      messages[messages.indexOf(known)] = d;
    } else {
      messages.unshift(d);
      for (const old of messages.splice(KEEP))
        seen.delete(old.message?.messageId ?? old.deliveryId);
    }
    seen.set(id, d);
    fresh = id;
    render();
    pending.push(d.deliveryId);
    void flushAcks();
  };

  let stream: { stop: () => void } | undefined;
  const start = () => {
    const types = typesInput.value
      .split(",")
      .map((t) => t.trim())
      .filter((t) => t.length > 0);
    const bad = types.find((t) => !TYPE_PATTERN.test(t));
    if (types.length === 0 || bad !== undefined) {
      note.textContent =
        bad === undefined
          ? "Name at least one event type."
          : `"${bad}" is not an event type (letters, digits, '.', '_', '-').`;
      return;
    }
    stream?.stop();
    pending.length = 0;
    note.textContent = "";
    topics.textContent = "";
    const chosen = types.join(",");
    setParam("events", chosen === DEFAULT_TYPE ? "" : chosen);
    stream = keepStreaming({
      open: (signal) =>
        client.subscribe({ group, eventTypes: types, start: StartPosition.LATEST }, { signal }),
      onState: state.set,
      onMessage: ({ event }) => {
        if (event.case === "subscribed") {
          topics.textContent = `Consuming ${types.join(", ")} from ${event.value.topics.join(", ")}`;
        } else if (event.case === "delivery") {
          onDelivery(event.value);
        }
      },
    });
  };

  body.querySelector("form")?.addEventListener("submit", (e) => {
    e.preventDefault();
    start();
  });

  publish.addEventListener("click", async () => {
    const type = typesInput.value.split(",")[0]?.trim() ?? "";
    let payload: Uint8Array;
    try {
      payload = new TextEncoder().encode(JSON.stringify(JSON.parse(payloadInput.value)));
    } catch {
      note.textContent = "The payload must be JSON.";
      return;
    }
    publish.disabled = true;
    try {
      const { receipt } = await client.publishEvent({
        event: {
          messageType: type,
          source: "floworchestrator-console",
          contentType: "application/json",
          payload,
        },
      });
      note.textContent = receipt
        ? `Published ${receipt.messageId.slice(0, 8)} to ${receipt.topic} · p${receipt.partition} · #${receipt.offset}`
        : "Published.";
    } catch (e) {
      note.textContent = `Publish failed: ${errorText(e)}`;
    } finally {
      publish.disabled = false;
    }
  });

  render();
  start();
  return root;
};
