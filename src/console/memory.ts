/**
 * The memory of one execution, grouped by branch: `MemoryManager.ListAddresses`
 * and `ListBranches`, listed again whenever the execution's `WatchMemory`
 * stream reports a change (and once each time it connects).
 */
import type { Client } from "@connectrpc/connect";
import { type Branch, BranchStatus } from "../../gen/floworchestrator/memory/v1/branch_pb.js";
import type { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { WatchMemoryResponse_Type as EventType } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import { type MemoryEntry, StepType } from "../../gen/floworchestrator/memory/v1/memory_pb.js";
import { badge, card, empty, fill, h, type Tone, table } from "./dom.js";
import { bytes, duration, enumLabel, errorText, time } from "./format.js";
import { getParam, setParam } from "./hash.js";
import { keepStreaming, streamBadge } from "./stream.js";

/** Largest listing shown (pages of 1,000). */
const MAX_ENTRIES = 5000;
/** Changes arrive in bursts (a step writes several outputs): one listing per burst. */
const REFRESH_DEBOUNCE_MS = 200;

const branchTone: Record<BranchStatus, Tone> = {
  [BranchStatus.UNSPECIFIED]: "muted",
  [BranchStatus.NEW]: "muted",
  [BranchStatus.IN_PROGRESS]: "info",
  [BranchStatus.COMPLETED]: "ok",
  [BranchStatus.FAILED]: "bad",
};

const stepTone: Record<StepType, Tone> = {
  [StepType.UNSPECIFIED]: "muted",
  [StepType.IMPORT]: "info",
  [StepType.PROCESS]: "warn",
  [StepType.EXPORT]: "ok",
};

/** `main` < `main.a` < `main.a.b` < `main.b`: parents before children, siblings in order. */
const byPath = (a: string, b: string) => {
  const x = a.split(".");
  const y = b.split(".");
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const c = (x[i] ?? "").localeCompare(y[i] ?? "");
    if (c !== 0) return c;
  }
  return x.length - y.length;
};

export const memoryPanel = (client: Client<typeof MemoryManagerService>) => {
  const { root, actions, body } = card(
    "memory",
    "Execution memory",
    "Addresses of one execution, grouped by branch (MemoryManagerService)",
  );
  const state = streamBadge("memory");
  state.root.hidden = true;
  const input = h("input", {
    type: "search",
    id: "execution-id",
    name: "execution",
    placeholder: "Execution id, e.g. EXEC-1",
    autocomplete: "off",
    spellcheck: "false",
    "aria-label": "Execution id",
  });
  const show = h("button", { type: "submit", class: "primary" }, "Show");
  const form = h("form", { class: "inline-form", id: "memory-form" }, input, show);
  actions.append(state.root);
  const summary = h("div", { class: "summary" });
  const content = h("div", {});
  fill(body, form, summary, content);

  let executionId = "";
  let stream: { stop: () => void } | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let listing: Promise<void> | undefined;
  let again = false;

  const entryRow = (e: MemoryEntry) => {
    const p = e.parts;
    const step = p?.stepType ?? StepType.UNSPECIFIED;
    return h(
      "tr",
      { "data-address": e.address },
      h("td", { class: "mono small address" }, e.address),
      h(
        "td",
        { class: "nowrap" },
        badge(enumLabel(StepType, step), stepTone[step]),
        " ",
        h("span", { class: "mono" }, p?.stepId ?? ""),
      ),
      h(
        "td",
        {},
        h("span", { class: "strong" }, p?.dataType ?? ""),
        p?.additionalInfo ? h("span", { class: "dim" }, ` · ${p.additionalInfo}`) : null,
      ),
      h(
        "td",
        { class: "nowrap num", title: `limit ${bytes(e.sizeLimitBytes)}` },
        e.version === 0n ? h("span", { class: "dim" }, "not written") : bytes(e.sizeBytes),
      ),
      h("td", { class: "mono" }, e.owner),
      h("td", { class: "num" }, String(e.version)),
      h(
        "td",
        { class: "nowrap", title: `allocated ${time(e.allocateTime)}` },
        duration(e.remainingTtl),
      ),
    );
  };

  const render = (entries: MemoryEntry[], branches: Branch[], truncated: boolean) => {
    const groups = new Map<string, MemoryEntry[]>();
    for (const b of branches) groups.set(b.branchPath, []);
    for (const e of entries) {
      const path = e.parts?.branchPath ?? "";
      groups.set(path, [...(groups.get(path) ?? []), e]);
    }
    const info = new Map(branches.map((b) => [b.branchPath, b]));
    const total = entries.reduce((n, e) => n + e.sizeBytes, 0n);
    fill(
      summary,
      h("span", { class: "mono strong" }, executionId),
      h("span", {}, `${entries.length} address${entries.length === 1 ? "" : "es"}`),
      h("span", {}, bytes(total)),
      h("span", {}, `${groups.size} branch${groups.size === 1 ? "" : "es"}`),
      truncated ? badge(`first ${MAX_ENTRIES} shown`, "warn") : null,
    );
    if (groups.size === 0) {
      fill(
        content,
        empty(
          `No memory for ${executionId}.`,
          "Addresses appear here as soon as a step allocates them.",
        ),
      );
      return;
    }
    fill(
      content,
      ...[...groups.keys()].sort(byPath).map((path) => {
        // In step order (2 before 10), as the flow runs; the address breaks ties.
        const list = (groups.get(path) ?? []).sort(
          (x, y) =>
            (x.parts?.stepId ?? "").localeCompare(y.parts?.stepId ?? "", undefined, {
              numeric: true,
            }) || x.address.localeCompare(y.address),
        );
        const branch = info.get(path);
        const depth = path.split(".").length - 1;
        const size = list.reduce((n, e) => n + e.sizeBytes, 0n);
        const group = h(
          "div",
          { class: "branch", "data-branch": path, "data-depth": Math.min(depth, 3) },
          h(
            "div",
            { class: "branch-header" },
            h("span", { class: "branch-path mono" }, path),
            branch
              ? badge(enumLabel(BranchStatus, branch.status), branchTone[branch.status])
              : null,
            branch?.retainForMerge ? h("span", { class: "chip" }, "kept for merge") : null,
            h(
              "span",
              { class: "dim" },
              `${list.length} address${list.length === 1 ? "" : "es"} · ${bytes(size)}`,
            ),
          ),
          list.length
            ? table(
                ["Address", "Step", "Data type", "Size", "Owner", "Version", "Expires in"],
                list.map(entryRow),
                "memory-table",
              )
            : h("p", { class: "dim small branch-empty" }, "No addresses in this branch."),
        );
        // Through the CSSOM: the page's CSP forbids style attributes, not style properties.
        group.style.setProperty("--depth", String(depth));
        return group;
      }),
    );
  };

  const list = async () => {
    const id = executionId;
    const entries: MemoryEntry[] = [];
    let pageToken = "";
    do {
      const page = await client.listAddresses({ executionId: id, pageSize: 1000, pageToken });
      entries.push(...page.entries);
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && entries.length < MAX_ENTRIES);
    const branches: Branch[] = [];
    let branchToken = "";
    do {
      const page = await client.listBranches({
        executionId: id,
        pageSize: 1000,
        pageToken: branchToken,
      });
      branches.push(...page.branches);
      branchToken = page.nextPageToken;
    } while (branchToken !== "");
    // The user may have picked another execution meanwhile.
    if (id === executionId) render(entries, branches, pageToken !== "");
  };

  /** Lists now, or once more after the listing in flight. */
  const refresh = () => {
    if (listing) {
      again = true;
      return;
    }
    listing = list()
      .catch((e) => {
        fill(content, h("div", { class: "alert" }, `Cannot list the memory: ${errorText(e)}`));
      })
      .finally(() => {
        listing = undefined;
        if (again) {
          again = false;
          refresh();
        }
      });
  };

  const open = (id: string) => {
    stream?.stop();
    clearTimeout(timer);
    executionId = id;
    setParam("execution", id);
    if (id === "") {
      state.root.hidden = true;
      fill(summary);
      fill(content, empty("Type an execution id to see its memory.", "For example EXEC-1."));
      return;
    }
    state.root.hidden = false;
    fill(summary);
    fill(content, empty(`Loading the memory of ${id}…`));
    stream = keepStreaming({
      open: (signal) => client.watchMemory({ executionId: id }, { signal }),
      onState: state.set,
      onMessage: (event) => {
        if (event.type === EventType.HEARTBEAT) return;
        // STARTED: (re)connected, so list everything; any other event: something changed.
        clearTimeout(timer);
        timer = setTimeout(refresh, event.type === EventType.STARTED ? 0 : REFRESH_DEBOUNCE_MS);
      },
    });
  };

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    open(input.value.trim());
  });
  input.value = getParam("execution") ?? "";
  open(input.value);
  return root;
};
