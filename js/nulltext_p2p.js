// Null-text P2P front-end.
//
// - A word helper under the Attention Controller's widgets: how the source and target prompts split into words
//   (the way the pack matches words), which words are swapped (mode replace), added or removed (mode refine),
//   reweighted, given a cross-attention window or used for local blend, and a warning in the node when a setting
//   names a word that is not in the prompts (or cannot be read). A prompt linked from another node (the examples'
//   "Source caption") is read from that node, not from the controller's own (stale, greyed) widget; where the
//   linked value cannot be seen before a run, the helper says so.
// - The text results of a run on the node (Null-Text Optimize's status, Reconstruction Check's PSNR/SSIM, Save and
//   Load Inversion's messages): the host sends them as `text` in the `executed` message, and the frontend draws
//   nothing for it by itself.
// - Tooltips on the pack's multiline prompt boxes, and the pack's example workflows in a useful order in the
//   template browser.
// Dependency-free; the word rules live in ntp_words.js.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { WATCHED_INPUTS, analyseController } from "./ntp_words.js";

const CONTROLLER = "NTP_AttentionController";
const HELPER_WIDGET = "ntp_word_helper";
const TEXT_WIDGET = "ntp_text_output";
/** The pack's nodes that send text, and what their box says before the first run. */
const TEXT_NODES = {
  NTP_NullTextOptimize: "After a run: inner iterations and the last loss of the optimisation.",
  NTP_ReconstructionCheck: "After a run: PSNR and SSIM of the reconstruction against the photo.",
  NTP_SaveInversion: "After a run: the file written.",
  NTP_LoadInversion: "After a run: steps, size and guidance of the file, and any warning.",
};
/** The example workflows (file names without .json) in the order a new user meets them. */
const TEMPLATE_ORDER = ["invert_and_reconstruct", "word_swap", "refine", "reweight", "invert_once_edit_many",
  "sdxl_word_swap", "masked_edit", "sd35_word_swap", "qwen_image_word_swap", "flux_word_swap", "chroma_word_swap"];
/** Nodes whose STRING output is the value of their text widget (so a linked prompt can be read before a run). */
const VALUE_NODES = { PrimitiveStringMultiline: "value", PrimitiveString: "value" };
const PASS_THROUGH = new Set(["Reroute"]);

const CSS = `
.ntp-words, .ntp-output { font: 12px/1.45 system-ui, sans-serif; color: var(--input-text, #ddd); box-sizing: border-box;
  padding: 4px 6px; overflow: hidden; background: var(--comfy-input-bg, #222); border-radius: 6px; }
.ntp-words .ntp-warn, .ntp-output .ntp-warn { background: #5a1d1d; border: 1px solid #e04848; color: #ffd6d6;
  border-radius: 4px; padding: 2px 6px; margin: 0 0 4px 0; }
.ntp-words .ntp-note { background: #1d3a5a; border: 1px solid #4a8fd0; color: #d6e9ff; border-radius: 4px;
  padding: 2px 6px; margin: 0 0 4px 0; }
.ntp-words .ntp-row { display: flex; flex-wrap: wrap; align-items: baseline; gap: 3px; margin: 2px 0; }
.ntp-words .ntp-label { color: #999; min-width: 46px; margin-right: 2px; }
.ntp-words .ntp-w { padding: 0 4px; border-radius: 3px; background: rgba(255,255,255,0.07); white-space: nowrap; }
.ntp-words .ntp-swapped { background: #7a4a10; color: #ffd9a0; }
.ntp-words .ntp-added { background: #1f5a2a; color: #b8f5c2; }
.ntp-words .ntp-removed { text-decoration: line-through; color: #888; }
.ntp-words .ntp-from { color: #c9a070; font-size: 10px; }
.ntp-words .ntp-linked { color: #8fb8e0; font-size: 10px; margin-left: 4px; }
.ntp-words .ntp-reweight { outline: 1px solid #b07cff; }
.ntp-words .ntp-factor { color: #d3b5ff; font-size: 10px; margin-left: 2px; }
.ntp-words .ntp-window { color: #9ad0ff; font-size: 10px; margin-left: 2px; }
.ntp-words .ntp-blend { box-shadow: inset 0 -2px 0 #35c0d0; }
.ntp-words .ntp-legend { color: #888; font-size: 10px; margin-top: 3px; }
.ntp-words .ntp-legend span { margin-right: 8px; }
.ntp-output .ntp-line { white-space: pre-wrap; overflow-wrap: anywhere; }
.ntp-output [data-state="placeholder"] { color: #888; font-style: italic; }
`;

function injectCss() {
  if (document.getElementById("ntp-words-css")) return;
  const style = document.createElement("style");
  style.id = "ntp-words-css";
  style.textContent = CSS;
  document.head.appendChild(style);
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v) {
  return Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000);
}

/**
 * A DOM widget as tall as its content, not saved with the graph. The content is measured once it is laid out at
 * (about) the node's width; before that (`estimate()`) a measurement would see every word wrapped on its own
 * line and make the node grow for good.
 */
function addSizedDomWidget(node, name, root, content, estimate) {
  let widget = null;
  let measured = null; // the last height measured for the current content (null: not measured since it changed)
  const laidOut = () => content.offsetHeight > 0 && root.clientWidth >= 0.6 * (node.size?.[0] ?? 0);
  const height = () => {
    if (laidOut()) measured = content.offsetHeight;
    return (measured ?? estimate()) + 2 * (widget?.margin ?? 10) + 10;
  };
  // The canvas lays the widgets out while it draws, and a hidden widget (zoomed out, off screen) cannot be
  // measured: when the content's real size shows up, lay the node out again with it.
  if (typeof ResizeObserver === "function") {
    new ResizeObserver(() => {
      if (!laidOut() || content.offsetHeight === measured) return;
      measured = content.offsetHeight;
      fitNode(node);
      node.graph?.setDirtyCanvas?.(true, true);
    }).observe(content);
  }
  root.ntpContentChanged = () => { measured = null; };
  widget = node.addDOMWidget(name, name, root, {
    serialize: false,
    hideOnZoom: true,
    getValue: () => undefined,
    setValue: () => {},
    getMinHeight: height,
    getMaxHeight: height,
  });
  widget.serialize = false; // keep widgets_values and the API prompt exactly as without it
  return widget;
}

/** Grow the node when its widgets need more room (never shrink what the user or the workflow set). */
function fitNode(node) {
  const need = node.computeSize?.();
  if (need && need[1] > node.size[1]) node.setSize([node.size[0], need[1]]);
  node.setDirtyCanvas?.(true, true);
}

// ---------------------------------------------------------------------------------------------------------------
// Input values, following links
// ---------------------------------------------------------------------------------------------------------------

/**
 * The value of input `name` of `node` as the run will see it: the widget's value when the input is not linked;
 * when it is linked, the value of the primitive node it comes from (through reroutes), or `{known: false}` when it
 * comes from a node that computes it.
 */
export function inputValue(node, name) {
  const widget = node.widgets?.find((w) => w.name === name);
  const slot = node.inputs?.findIndex((i) => i.name === name) ?? -1;
  const input = slot >= 0 ? node.inputs[slot] : null;
  if (!input || input.link == null) return { known: true, value: widget ? widget.value : "", from: null };
  let origin = node.getInputNode?.(slot);
  let link = node.getInputLink?.(slot);
  const seen = new Set();
  while (origin && PASS_THROUGH.has(origin.type) && !seen.has(origin.id)) {
    seen.add(origin.id);
    link = origin.getInputLink?.(0);
    origin = origin.getInputNode?.(0);
  }
  if (!origin) return { known: false, value: null, from: null };
  const from = origin.title || origin.type;
  let source = null;
  if (origin.type === "PrimitiveNode") source = origin.widgets?.[0]; // the frontend's own primitive node
  else if (VALUE_NODES[origin.type]) source = origin.widgets?.find((w) => w.name === VALUE_NODES[origin.type]);
  if (source && (link?.origin_slot ?? 0) === 0) return { known: true, value: source.value, from };
  return { known: false, value: null, from };
}

function controllerValues(node) {
  const values = { sources: {}, linked: {} };
  for (const name of WATCHED_INPUTS) {
    const v = inputValue(node, name);
    values[name] = v.known ? v.value : null;
    if (v.from) {
      values.sources[name] = v.from;
      values.linked[name] = v.known;
    }
  }
  return values;
}

// ---------------------------------------------------------------------------------------------------------------
// The word helper
// ---------------------------------------------------------------------------------------------------------------

function wordChip(w) {
  const classes = ["ntp-w"];
  const tips = [];
  if (w.kind === "swapped") {
    classes.push("ntp-swapped");
    tips.push(`swapped: '${w.from}' -> '${w.word}'`);
  } else if (w.kind === "added") {
    classes.push("ntp-added");
    tips.push("added word (refine)");
  }
  if (w.removed) {
    classes.push("ntp-removed");
    tips.push("removed in an edit (refine)");
  }
  if (w.reweight !== null && w.reweight !== undefined) {
    classes.push("ntp-reweight");
    tips.push(`reweighted x${fmt(w.reweight)}`);
  }
  if (w.blend) {
    classes.push("ntp-blend");
    tips.push("local blend word");
  }
  const chip = el("span", classes.join(" "));
  chip.dataset.word = w.word;
  if (w.kind === "swapped") chip.appendChild(el("span", "ntp-from", `${w.from}\u2192`));
  chip.appendChild(document.createTextNode(w.word));
  if (w.reweight !== null && w.reweight !== undefined) chip.appendChild(el("span", "ntp-factor", `\u00d7${fmt(w.reweight)}`));
  if (w.window) chip.appendChild(el("span", "ntp-window", `\u23f1${fmt(w.window[0])}-${fmt(w.window[1])}`));
  if (tips.length) chip.title = tips.join("; ");
  return chip;
}

function render(root, a, values) {
  root.replaceChildren();
  for (const msg of a.warnings) {
    const warn = el("div", "ntp-warn", `\u26a0 ${msg}`);
    warn.dataset.kind = "warning";
    root.appendChild(warn);
  }
  for (const msg of a.notes) {
    const note = el("div", "ntp-note", `\u2139 ${msg}`);
    note.dataset.kind = "note";
    root.appendChild(note);
  }
  if (!a.unknown.includes("source_prompt")) {
    const src = el("div", "ntp-row ntp-source");
    src.appendChild(el("span", "ntp-label", "source"));
    a.source.forEach((w) => src.appendChild(wordChip({ kind: "same", reweight: null, window: null, ...w })));
    if (values.linked.source_prompt) {
      const from = el("span", "ntp-linked", `\u2190 ${values.sources.source_prompt}`);
      from.dataset.linkedFrom = values.sources.source_prompt;
      from.title = `source_prompt is linked: the words of '${values.sources.source_prompt}'`;
      src.appendChild(from);
    }
    root.appendChild(src);
  }
  a.edits.forEach((edit, e) => {
    const row = el("div", "ntp-row ntp-edit");
    row.dataset.edit = String(e + 1);
    row.appendChild(el("span", "ntp-label", `edit ${e + 1}`));
    edit.words.forEach((w) => row.appendChild(wordChip(w)));
    if (!edit.changed && a.mode === "replace" && !a.unknown.includes("source_prompt") && edit.words.length === a.source.length)
      row.appendChild(el("span", "ntp-from", "(no word changed: reweight/blend only)"));
    root.appendChild(row);
  });
  const legend = el("div", "ntp-legend");
  for (const [cls, text] of [["ntp-swapped", "swapped"], ["ntp-added", "added"], ["ntp-removed", "removed"],
    ["ntp-reweight", "reweighted"], ["ntp-blend", "blend"]]) {
    legend.appendChild(el("span", `ntp-w ${cls}`, text));
  }
  root.appendChild(legend);
}

function estimateHelperHeight(a) {
  const rows = 2 + a.edits.length + 1.5 * (a.warnings.length + a.notes.length);
  const words = a.source.length + a.edits.reduce((n, e) => n + e.words.length, 0);
  return 12 + rows * 20 + Math.floor(words / 12) * 18;
}

const liveUpdates = new Set(); // update functions of the helpers on screen (values change without callbacks)

function attachHelper(node) {
  injectCss();
  const root = el("div", "ntp-words");
  root.dataset.ntp = "word-helper";
  const content = el("div", "ntp-content"); // sized by its text (root is sized by the node's layout)
  root.appendChild(content);
  const state = { key: null, analysis: null };
  const widget = addSizedDomWidget(node, HELPER_WIDGET, root, content,
    () => estimateHelperHeight(state.analysis ?? { edits: [], warnings: [], notes: [], source: [] }));

  const update = (force = false) => {
    const values = controllerValues(node);
    const key = JSON.stringify(values);
    if (!force && key === state.key) return;
    state.key = key;
    state.analysis = analyseController(values);
    root.ntpContentChanged?.();
    render(content, state.analysis, values);
    node.ntpWordHelper = { ...state.analysis, values }; // for tests and other extensions
    fitNode(node);
  };
  for (const name of WATCHED_INPUTS) {
    const w = node.widgets?.find((x) => x.name === name);
    if (!w) continue;
    const cb = w.callback;
    w.callback = function (...args) {
      const r = cb?.apply(this, args);
      update();
      return r;
    };
  }
  // Values also change without callbacks (loading a workflow, undo, paste, typing in a linked caption node).
  const onDraw = node.onDrawForeground;
  node.onDrawForeground = function (...args) {
    const r = onDraw?.apply(this, args);
    update();
    return r;
  };
  const onConfigure = node.onConfigure;
  node.onConfigure = function (...args) {
    const r = onConfigure?.apply(this, args);
    update(true);
    return r;
  };
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) {
    const r = onConnectionsChange?.apply(this, args);
    requestAnimationFrame(() => update());
    return r;
  };
  const onRemoved = node.onRemoved;
  node.onRemoved = function (...args) {
    liveUpdates.delete(update);
    return onRemoved?.apply(this, args);
  };
  liveUpdates.add(update);
  update(true);
  return widget;
}

let pollTimer = null;
function pollLinkedValues() {
  // A caption typed into the linked "Source caption" node changes the controller's words without any event on the
  // controller: look again on input events and, cheaply, twice a second.
  if (pollTimer !== null) return;
  const all = () => liveUpdates.forEach((u) => u());
  document.addEventListener("input", () => requestAnimationFrame(all), true);
  pollTimer = setInterval(all, 500);
}

// ---------------------------------------------------------------------------------------------------------------
// Text results on the node
// ---------------------------------------------------------------------------------------------------------------

function attachTextOutput(node, placeholder) {
  injectCss();
  const root = el("div", "ntp-output");
  root.dataset.ntp = "text-output";
  const content = el("div", "ntp-output-content");
  root.appendChild(content);
  const show = (lines, state) => {
    content.replaceChildren();
    content.dataset.state = state;
    for (const line of lines) {
      const warning = /^WARNING:/.test(line);
      const div = el("div", warning ? "ntp-line ntp-warn" : "ntp-line", line);
      if (warning) div.dataset.kind = "warning";
      content.appendChild(div);
    }
  };
  show([placeholder], "placeholder");
  let shown = [placeholder];
  // before it can be measured: the lines wrapped at about 6.5 px a character in the node's width
  const estimate = () => {
    const perLine = Math.max(10, Math.floor(((node.size?.[0] ?? 300) - 40) / 6.5));
    return 4 + 18 * shown.reduce((n, l) => n + Math.max(1, Math.ceil(l.length / perLine)), 0);
  };
  addSizedDomWidget(node, TEXT_WIDGET, root, content, estimate);
  requestAnimationFrame(() => fitNode(node));
  node.ntpShowText = (text, how = "result") => {
    const lines = (Array.isArray(text) ? text : [text]).flatMap((t) => String(t ?? "").split("\n")).filter((l) => l.length);
    shown = lines.length ? lines : [placeholder];
    root.ntpContentChanged?.();
    show(shown, lines.length ? how : "placeholder");
    node.ntpTextOutput = lines; // for tests and other extensions
    requestAnimationFrame(() => fitNode(node));
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Tooltips on multiline prompt boxes
// ---------------------------------------------------------------------------------------------------------------

function inputTooltip(nodeData, name) {
  const spec = nodeData?.input?.required?.[name] ?? nodeData?.input?.optional?.[name];
  return (Array.isArray(spec) ? spec[1]?.tooltip : undefined) ?? nodeData?.inputs?.[name]?.tooltip;
}

function addTextareaTooltips(node, nodeData) {
  for (const w of node.widgets ?? []) {
    const area = w.inputEl ?? w.element;
    if (!(area instanceof HTMLTextAreaElement)) continue;
    const tip = inputTooltip(nodeData, w.name);
    if (tip && !area.title) area.title = tip;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The example workflows in the template browser, in order
// ---------------------------------------------------------------------------------------------------------------

function packFolder() {
  // /extensions/<the pack's folder in custom_nodes>/nulltext_p2p.js
  const parts = new URL(import.meta.url).pathname.split("/");
  return decodeURIComponent(parts[parts.length - 2] ?? "");
}

function orderTemplates() {
  const original = api?.getWorkflowTemplates;
  if (typeof original !== "function" || original.ntpOrdered) return;
  const folder = packFolder();
  const rank = (name) => {
    const i = TEMPLATE_ORDER.indexOf(name);
    return i < 0 ? TEMPLATE_ORDER.length : i;
  };
  const ordered = async function (...args) {
    const templates = await original.apply(this, args);
    const ours = templates?.[folder];
    if (Array.isArray(ours)) ours.sort((a, b) => rank(a) - rank(b) || String(a).localeCompare(String(b)));
    return templates;
  };
  ordered.ntpOrdered = true;
  api.getWorkflowTemplates = ordered;
}

/**
 * Nodes the host did not run again (their result was cached) send no `executed` message, so their box would keep
 * the placeholder or an older text. The prompt's history holds the UI outputs of the cached nodes too: show those,
 * or say that the node was cached.
 */
function followCachedNodes() {
  if (typeof api?.addEventListener !== "function") return;
  const cached = new Map(); // prompt id -> node ids
  api.addEventListener("execution_cached", ({ detail }) => {
    if (detail?.prompt_id && Array.isArray(detail.nodes)) cached.set(detail.prompt_id, detail.nodes.map(String));
  });
  api.addEventListener("execution_success", async ({ detail }) => {
    const promptId = detail?.prompt_id;
    const ids = cached.get(promptId);
    cached.delete(promptId);
    const nodes = (ids ?? []).map((id) => app.graph?.getNodeById?.(id)).filter((n) => n?.ntpShowText);
    if (!nodes.length) return;
    let outputs = {};
    try {
      const res = await api.fetchApi(`/history/${encodeURIComponent(promptId)}`);
      outputs = (await res.json())?.[promptId]?.outputs ?? {};
    } catch (err) {
      console.warn("[nulltext_p2p] could not read the history of a run", err);
    }
    for (const n of nodes) {
      const text = outputs[String(n.id)]?.text;
      if (text !== undefined) n.ntpShowText(text, "cached");
      else if (!n.ntpTextOutput?.length) n.ntpShowText("Cached: not recomputed in this run (same inputs as before).", "cached");
    }
  });
}

app.registerExtension({
  name: "nulltext_p2p.AttentionControllerWords",
  async setup() {
    pollLinkedValues();
    followCachedNodes();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const name = nodeData?.name;
    if (typeof name !== "string" || !name.startsWith("NTP_")) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const r = onNodeCreated?.apply(this, args);
      try {
        addTextareaTooltips(this, nodeData);
        if (name === CONTROLLER) attachHelper(this);
        if (TEXT_NODES[name]) attachTextOutput(this, TEXT_NODES[name]);
      } catch (err) {
        console.error("[nulltext_p2p] node extension failed", err);
      }
      return r;
    };
    if (TEXT_NODES[name]) {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message, ...rest) {
        const r = onExecuted?.apply(this, [message, ...rest]);
        try {
          if (message?.text !== undefined) this.ntpShowText?.(message.text);
        } catch (err) {
          console.error("[nulltext_p2p] text output failed", err);
        }
        return r;
      };
    }
  },
});

orderTemplates();
