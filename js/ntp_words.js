// Null-text P2P: how the Attention Controller's prompts split into words, and what each setting does to them.
//
// Pure functions (no DOM, no ComfyUI): imported by nulltext_p2p.js in the browser and by the tests under node.
// The rules mirror the pack's Python (core/prompt_tokens.py, core/attention_edit.py, core/seq_aligner.py, and
// nodes/word_syntax.py for the word fields: one grammar, both sides tested on tests/word_syntax_cases.json):
//   - a prompt splits on whitespace (Python's str.split());
//   - words are matched lower-cased with , . ; : ! ? " ' ( ) stripped at both ends (normalize_word);
//   - a phrase matches consecutive words (PromptTokens.find);
//   - "replace" swaps the words whose text differs at the same index (same number of words needed);
//   - "refine" aligns the prompts (Needleman-Wunsch, gap 0, match 1, mismatch -1, ties left > up > diagonal)
//     and the target words without a counterpart are the added ones;
//   - reweight and cross-attention windows act on the edited prompts, local blend on every prompt.

export const PUNCTUATION = ",.;:!?\"'()";
/** core.attention_edit.MODES (tests/test_js_extension.py checks they are equal). */
export const MODES = ["replace", "refine"];
/** The controller's inputs the helper reads (each may be a widget or linked from another node). */
export const WATCHED_INPUTS = ["source_prompt", "target_prompts", "mode", "reweight", "word_windows", "blend_words"];

function stripChars(s, chars) {
  let a = 0;
  let b = s.length;
  while (a < b && chars.includes(s[a])) a++;
  while (b > a && chars.includes(s[b - 1])) b--;
  return s.slice(a, b);
}

/** Python `normalize_word`: strip, strip punctuation, strip, lower-case. */
export function normalizeWord(w) {
  return stripChars(String(w).trim(), PUNCTUATION).trim().toLowerCase();
}

/** Python `split_prompt`: `text.split()`. */
export function splitPrompt(text) {
  return String(text ?? "").split(/\s+/).filter((w) => w.length > 0);
}

/** Word indices of every occurrence of a word or phrase in `words` (PromptTokens.find, by word). */
export function findPhrase(words, phrase) {
  const wanted = splitPrompt(phrase).map(normalizeWord).filter((w) => w);
  if (!wanted.length) return [];
  const have = words.map(normalizeWord);
  const out = new Set();
  for (let s = 0; s + wanted.length <= have.length; s++) {
    let ok = true;
    for (let k = 0; k < wanted.length; k++) {
      if (have[s + k] !== wanted[k]) {
        ok = false;
        break;
      }
    }
    if (ok) for (let k = 0; k < wanted.length; k++) out.add(s + k);
  }
  return [...out].sort((x, y) => x - y);
}

function items(text) {
  return String(text ?? "")
    .split(/[,;\n]/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function partition(item) {
  const i = item.indexOf("=");
  if (i < 0) return [item.trim(), "", ""];
  return [item.slice(0, i).trim(), "=", item.slice(i + 1).trim()];
}

// What Python's float() reads (ASCII): digits may be grouped by single underscores; inf and nan are read, then
// refused as not finite.
const DIGITS = "\\d(?:_?\\d)*";
const NUMBER = new RegExp(`^[+-]?(?:(?:${DIGITS}(?:\\.(?:${DIGITS})?)?|\\.${DIGITS})(?:e[+-]?${DIGITS})?|inf|infinity|nan)$`, "i");
const UNSIGNED = "(\\d+(?:\\.\\d*)?|\\.\\d+)";
const WINDOW_RANGE = new RegExp(`^${UNSIGNED}\\s*(?:-|\\.\\.|to)\\s*${UNSIGNED}$`);
const WINDOW_SINGLE = new RegExp(`^${UNSIGNED}$`);

/** "tiger=2, fluffy=0.5" -> {items: [[word, value]], errors: [message]} (parse_word_values). */
export function parseWordValues(text) {
  const out = [];
  const errors = [];
  for (const item of items(text)) {
    const [word, eq, value] = partition(item);
    if (!eq || value.includes("=") || !normalizeWord(word)) {
      errors.push(`cannot read '${item}': write e.g. 'tiger=2, fluffy=0.5'`);
      continue;
    }
    if (!NUMBER.test(value)) {
      errors.push(`cannot read the value of '${item}': write e.g. 'tiger=2, fluffy=0.5'`);
      continue;
    }
    const v = Number(value.replaceAll("_", ""));
    if (!Number.isFinite(v)) {
      errors.push(`the value of '${item}' is not a finite number: write e.g. 'tiger=2, fluffy=0.5'`);
      continue;
    }
    out.push([word, v]);
  }
  return { items: out, errors };
}

/** "cat, tiger" -> {items: [word], errors} (parse_word_list). */
export function parseWordList(text) {
  const out = [];
  const errors = [];
  for (const item of items(text)) {
    if (item.includes("=") || !normalizeWord(item)) {
      errors.push(`cannot read '${item}': write words separated by commas, e.g. 'cat, tiger'`);
      continue;
    }
    out.push(item);
  }
  return { items: out, errors };
}

/** "tiger=0.0-0.4; sofa=0.6" -> {items: [[word, [start, end]]], errors} (parse_word_windows). */
export function parseWordWindows(text) {
  const out = [];
  const errors = [];
  const seen = new Set();
  for (const item of items(text)) {
    const [word, eq, value] = partition(item);
    if (!eq || !normalizeWord(word)) {
      errors.push(`cannot read '${item}': write e.g. 'tiger=0.0-0.4; sofa=0.6'`);
      continue;
    }
    let m = WINDOW_RANGE.exec(value);
    let win;
    if (m) win = [Number(m[1]), Number(m[2])];
    else if ((m = WINDOW_SINGLE.exec(value))) win = [0, Number(m[1])];
    else {
      errors.push(`cannot read the window of '${item}': write e.g. 'tiger=0.0-0.4; sofa=0.6'`);
      continue;
    }
    if (seen.has(word)) {
      errors.push(`the word '${word}' has two windows`);
      continue;
    }
    if (win[0] < 0 || win[0] > 1 || win[1] < 0 || win[1] > 1) {
      errors.push(`window of '${word}': the window (${win[0]}, ${win[1]}) must lie within [0, 1]`);
      continue;
    }
    if (win[0] > win[1]) {
      errors.push(`window of '${word}': the window start ${win[0]} is after its end ${win[1]}`);
      continue;
    }
    seen.add(word);
    out.push([word, win]);
  }
  return { items: out, errors };
}

/** For each target word, the aligned source word index or -1 (seq_aligner.aligned_target_to_source, by word). */
export function alignWords(source, target) {
  const x = source.map((w) => w.toLowerCase());
  const y = target.map((w) => w.toLowerCase());
  const nx = x.length;
  const ny = y.length;
  const LEFT = 1, UP = 2, DIAG = 3;
  const score = Array.from({ length: nx + 1 }, () => new Array(ny + 1).fill(0));
  const trace = Array.from({ length: nx + 1 }, () => new Array(ny + 1).fill(0));
  for (let j = 1; j <= ny; j++) trace[0][j] = LEFT;
  for (let i = 1; i <= nx; i++) trace[i][0] = UP;
  for (let i = 1; i <= nx; i++) {
    for (let j = 1; j <= ny; j++) {
      const left = score[i][j - 1];
      const up = score[i - 1][j];
      const diag = score[i - 1][j - 1] + (x[i - 1] === y[j - 1] ? 1 : -1);
      const best = Math.max(left, up, diag);
      score[i][j] = best;
      trace[i][j] = best === left ? LEFT : best === up ? UP : DIAG;
    }
  }
  const out = [];
  let i = nx;
  let j = ny;
  while (i > 0 || j > 0) {
    const code = trace[i][j];
    if (code === DIAG) {
      i--;
      j--;
      out.push(i);
    } else if (code === LEFT) {
      j--;
      out.push(-1);
    } else if (code === UP) {
      i--;
    } else break;
  }
  return out.reverse();
}

/**
 * Everything the helper shows, from the controller's input values:
 * {source: [{word, removed, blend}], edits: [{text, words: [{word, kind, from, reweight, window, blend}],
 *  changed}], warnings: [string], notes: [string], unknown: [name], mode}. kind is "same", "swapped" (replace) or
 * "added" (refine).
 *
 * A value that is `null` is not visible before the graph runs (the input is linked to a node that computes it):
 * the helper says so (a note) and checks nothing that needs it. `values.sources` may name where linked values come
 * from ({source_prompt: "Source caption"}), for the notes.
 */
export function analyseController(values) {
  const unknown = WATCHED_INPUTS.filter((name) => values[name] === null);
  const sources = values.sources ?? {};
  const notes = unknown.map((name) => `${name} comes from '${sources[name] ?? "another node"}': its value is known ` +
    "only when the graph runs, so the words below do not include it.");
  const sourceKnown = values.source_prompt !== null;
  const targetsKnown = values.target_prompts !== null;
  const mode = MODES.includes(values.mode) ? values.mode : "replace";
  const modeKnown = values.mode !== null;
  const warnings = [];
  const srcWords = sourceKnown ? splitPrompt(values.source_prompt) : [];
  const lines = String(values.target_prompts ?? "")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l);
  if (sourceKnown && !srcWords.length) warnings.push("source_prompt is empty: type the caption of the photo.");
  if (targetsKnown && !lines.length) warnings.push("target_prompts is empty: type the edited caption (one edit per line).");

  const source = srcWords.map((word) => ({ word, removed: false, blend: false }));
  const edits = lines.map((text) => {
    const words = splitPrompt(text).map((word) => ({ word, kind: "same", from: null, reweight: null, window: null, blend: false }));
    return { text, words, changed: false };
  });

  edits.forEach((edit, e) => {
    const tgt = edit.words.map((w) => w.word);
    if (!sourceKnown || !modeKnown) return; // what changes needs the source and the mode
    if (mode === "replace") {
      if (tgt.length !== srcWords.length) {
        warnings.push(
          `edit ${e + 1}: mode 'replace' needs the same number of words as the source (${srcWords.length}), ` +
            `but it has ${tgt.length}: choose mode 'refine' to add or remove words.`,
        );
        return;
      }
      tgt.forEach((w, k) => {
        if (w !== srcWords[k]) {
          edit.words[k].kind = "swapped";
          edit.words[k].from = srcWords[k];
          edit.changed = true;
        }
      });
    } else {
      const aligned = alignWords(srcWords, tgt);
      const used = new Set(aligned.filter((a) => a >= 0));
      aligned.forEach((a, k) => {
        if (a < 0) {
          edit.words[k].kind = "added";
          edit.changed = true;
        }
      });
      srcWords.forEach((_, k) => {
        if (!used.has(k)) {
          source[k].removed = true;
          edit.changed = true;
        }
      });
    }
  });

  const targetWordLists = edits.map((ed) => ed.words.map((w) => w.word));
  const reweight = parseWordValues(values.reweight ?? "");
  reweight.errors.forEach((m) => warnings.push(`reweight: ${m}`));
  for (const [word, value] of reweight.items) {
    let found = false;
    targetWordLists.forEach((words, e) => {
      for (const k of findPhrase(words, word)) {
        edits[e].words[k].reweight = value;
        found = true;
      }
    });
    if (!found && targetsKnown)
      warnings.push(`reweight: '${word}' is not in the edited prompt${edits.length > 1 ? "s" : ""}.`);
  }

  const windows = parseWordWindows(values.word_windows ?? "");
  windows.errors.forEach((m) => warnings.push(`word_windows: ${m}`));
  for (const [word, win] of windows.items) {
    let found = false;
    targetWordLists.forEach((words, e) => {
      for (const k of findPhrase(words, word)) {
        edits[e].words[k].window = win;
        found = true;
      }
    });
    if (!found && targetsKnown)
      warnings.push(`word_windows: '${word}' is not in the edited prompt${edits.length > 1 ? "s" : ""}.`);
  }

  const blend = parseWordList(values.blend_words ?? "");
  blend.errors.forEach((m) => warnings.push(`blend_words: ${m}`));
  for (const word of blend.items) {
    let found = false;
    for (const k of findPhrase(srcWords, word)) {
      source[k].blend = true;
      found = true;
    }
    targetWordLists.forEach((words, e) => {
      for (const k of findPhrase(words, word)) {
        edits[e].words[k].blend = true;
        found = true;
      }
    });
    if (!found && sourceKnown && targetsKnown)
      warnings.push(`blend_words: '${word}' is not in the source or edited prompts.`);
  }

  return { mode, source, edits, warnings, notes, unknown };
}
