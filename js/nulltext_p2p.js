// Null-text P2P front-end: a word helper under the Attention Controller's widgets.
//
// Shows how the source and target prompts split into words (the way the pack matches words), which words are
// swapped (mode replace), added or removed (mode refine), reweighted, given a cross-attention window or used for
// local blend, and a warning in the node when a setting names a word that is not in the prompts (or cannot be
// read). Dependency-free; the word rules live in ntp_words.js.

import { app } from "../../scripts/app.js";
import { analyseController } from "./ntp_words.js";

const NODE_ID = "NTP_AttentionController";
const WIDGET = "ntp_word_helper";
const WATCHED = ["source_prompt", "target_prompts", "mode", "reweight", "word_windows", "blend_words"];

const CSS = `
.ntp-words { font: 12px/1.45 system-ui, sans-serif; color: var(--input-text, #ddd); box-sizing: border-box;
  padding: 4px 6px; overflow: hidden; background: var(--comfy-input-bg, #222); border-radius: 6px; }
.ntp-words .ntp-warn { background: #5a1d1d; border: 1px solid #e04848; color: #ffd6d6; border-radius: 4px;
  padding: 2px 6px; margin: 0 0 4px 0; }
.ntp-words .ntp-row { display: flex; flex-wrap: wrap; align-items: baseline; gap: 3px; margin: 2px 0; }
.ntp-words .ntp-label { color: #999; min-width: 46px; margin-right: 2px; }
.ntp-words .ntp-w { padding: 0 4px; border-radius: 3px; background: rgba(255,255,255,0.07); white-space: nowrap; }
.ntp-words .ntp-swapped { background: #7a4a10; color: #ffd9a0; }
.ntp-words .ntp-added { background: #1f5a2a; color: #b8f5c2; }
.ntp-words .ntp-removed { text-decoration: line-through; color: #888; }
.ntp-words .ntp-from { color: #c9a070; font-size: 10px; }
.ntp-words .ntp-reweight { outline: 1px solid #b07cff; }
.ntp-words .ntp-factor { color: #d3b5ff; font-size: 10px; margin-left: 2px; }
.ntp-words .ntp-window { color: #9ad0ff; font-size: 10px; margin-left: 2px; }
.ntp-words .ntp-blend { box-shadow: inset 0 -2px 0 #35c0d0; }
.ntp-words .ntp-legend { color: #888; font-size: 10px; margin-top: 3px; }
.ntp-words .ntp-legend span { margin-right: 8px; }
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

function render(root, a) {
  root.replaceChildren();
  for (const msg of a.warnings) {
    const warn = el("div", "ntp-warn", `\u26a0 ${msg}`);
    warn.dataset.kind = "warning";
    root.appendChild(warn);
  }
  const src = el("div", "ntp-row ntp-source");
  src.appendChild(el("span", "ntp-label", "source"));
  a.source.forEach((w) => src.appendChild(wordChip({ kind: "same", reweight: null, window: null, ...w })));
  root.appendChild(src);
  a.edits.forEach((edit, e) => {
    const row = el("div", "ntp-row ntp-edit");
    row.dataset.edit = String(e + 1);
    row.appendChild(el("span", "ntp-label", `edit ${e + 1}`));
    edit.words.forEach((w) => row.appendChild(wordChip(w)));
    if (!edit.changed && a.mode === "replace" && edit.words.length === a.source.length)
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

function widgetValues(node) {
  const out = {};
  for (const name of WATCHED) {
    const w = node.widgets?.find((x) => x.name === name);
    out[name] = w ? w.value : "";
  }
  return out;
}

function estimateHeight(a) {
  const rows = 2 + a.edits.length + a.warnings.length;
  const words = a.source.length + a.edits.reduce((n, e) => n + e.words.length, 0);
  return 12 + rows * 20 + Math.floor(words / 12) * 18;
}

function attachHelper(node) {
  injectCss();
  const root = el("div", "ntp-words");
  root.dataset.ntp = "word-helper";
  const content = el("div", "ntp-content"); // sized by its text (root is sized by the node's layout)
  root.appendChild(content);
  const state = { key: null, analysis: null };
  // As tall as the content (plus the widget's margins above and below and the box's padding): measured once it is
  // on screen, estimated before.
  let widget = null;
  const height = () => (content.offsetHeight > 0 ? content.offsetHeight : estimateHeight(state.analysis ??
    { edits: [], warnings: [], source: [] })) + 2 * (widget?.margin ?? 10) + 10;
  widget = node.addDOMWidget(WIDGET, "ntp_words", root, {
    serialize: false,
    hideOnZoom: true,
    getValue: () => undefined,
    setValue: () => {},
    getMinHeight: height,
    getMaxHeight: height,
  });
  widget.serialize = false; // keep widgets_values and the API prompt exactly as without the helper

  const update = (force = false) => {
    const values = widgetValues(node);
    const key = JSON.stringify(values);
    if (!force && key === state.key) return;
    state.key = key;
    state.analysis = analyseController(values);
    render(content, state.analysis);
    node.ntpWordHelper = state.analysis; // for tests and other extensions
    const need = node.computeSize?.();
    if (need && need[1] > node.size[1]) node.setSize([node.size[0], need[1]]);
    node.setDirtyCanvas?.(true, true);
  };
  for (const name of WATCHED) {
    const w = node.widgets?.find((x) => x.name === name);
    if (!w) continue;
    const cb = w.callback;
    w.callback = function (...args) {
      const r = cb?.apply(this, args);
      update();
      return r;
    };
  }
  // Values also change without callbacks (loading a workflow, undo, paste, widgets set by other code).
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
  update(true);
  return widget;
}

app.registerExtension({
  name: "nulltext_p2p.AttentionControllerWords",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_ID) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const r = onNodeCreated?.apply(this, args);
      try {
        attachHelper(this);
      } catch (err) {
        console.error("[nulltext_p2p] word helper failed", err);
      }
      return r;
    };
  },
});
