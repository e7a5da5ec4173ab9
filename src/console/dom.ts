/**
 * A few DOM helpers, instead of a framework: the console is four panels that
 * re-render small tables. Text always goes in as text nodes, never as HTML,
 * so whatever a service or a message carries cannot inject markup.
 */

export type Child = Node | string | number | null | undefined | false;
export type Attrs = Record<string, string | number | boolean | undefined>;

/** An element with attributes (`false`/`undefined` leave one out) and children. */
export const h = <K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] => {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
};

const append = (el: Element, children: Child[]) => {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "number" ? String(child) : child);
  }
};

/** Replaces an element's children. */
export const fill = (el: Element, ...children: Child[]) => {
  el.replaceChildren();
  append(el, children);
};

/** Colours of a badge: a status that is fine, in between, failing, neutral, or informative. */
export type Tone = "ok" | "warn" | "bad" | "muted" | "info";

export const badge = (text: string, tone: Tone, attrs: Attrs = {}) =>
  h("span", { ...attrs, class: `badge badge-${tone}` }, text);

/** A table with a header row; `rows` are `<tr>` elements. Scrolls sideways when too wide. */
export const table = (headers: ReadonlyArray<string>, rows: ReadonlyArray<Node>, cls = "") =>
  h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: `table ${cls}`.trim() },
      h("thead", {}, h("tr", {}, ...headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, ...rows),
    ),
  );

/** A centred note for an empty or not yet loaded section. */
export const empty = (text: string, hint?: string) =>
  h("div", { class: "empty" }, h("p", {}, text), hint ? h("p", { class: "hint" }, hint) : null);

/** A card: a titled section with a slot for badges/controls in its header. */
export const card = (id: string, title: string, subtitle: string) => {
  const actions = h("div", { class: "card-actions" });
  const body = h("div", { class: "card-body" });
  const root = h(
    "section",
    { class: "card", id, "aria-labelledby": `${id}-title` },
    h(
      "header",
      { class: "card-header" },
      h("div", {}, h("h2", { id: `${id}-title` }, title), h("p", { class: "subtitle" }, subtitle)),
      actions,
    ),
    body,
  );
  return { root, actions, body };
};
