"""The front-end extension (js/): word rules against the Python ones (node), and the real page in headless Chromium.

Browser test
    Starts a real ComfyUI server (``main.py --cpu`` through ``tests/js/comfy_server.py``, which only adds the
    torchvision placeholder the conftest also uses) with ``--base-directory`` a temp dir whose ``custom_nodes``
    holds a link to this pack and whose ``models/checkpoints`` holds the tiny checkpoint; then drives Debian's
    Chromium (``--headless``, fresh profile) over the DevTools protocol, spoken here with aiohttp's websocket
    client (no playwright, no browser download). Skipped with a loud reason when no Chromium is installed
    (``apt-get install -y chromium``). Screenshots go to a temp dir (paths printed); the last one is also copied
    to ``/tmp/ntp_screenshot.png``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
JS_DIR = REPO_ROOT / "js"
PACK_DIR_NAME = "nulltext_p2p"
SCREENSHOT_COPY = "/tmp/ntp_screenshot.png"
SERVER_START_TIMEOUT = 300  # s; the host imports torch and all its node modules (slow on 2 busy cores)
PAGE_TIMEOUT = 180  # s; first load of the frontend bundle (10 MB) and the node definitions
STEP_TIMEOUT = 60  # s; one DevTools call


# ------------------------------------------------------------------------------------------------------------
# ntp_words.js under node, against the pack's Python word rules
# ------------------------------------------------------------------------------------------------------------
def run_words(calls: list) -> list:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node (Node.js) not found: the JS word-rule tests need it (apt-get install -y nodejs)")
    proc = subprocess.run([node, str(REPO_ROOT / "tests" / "js" / "run_words.mjs")], input=json.dumps({"calls": calls}),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def fake_tokens(text: str, vocab: dict):
    """PromptTokens with one token per word, the id given by the lower-cased word (like CLIP, which lower-cases)."""
    from nulltext_p2p.core.prompt_tokens import PromptTokens, split_prompt

    words = split_prompt(text)
    ids = [(vocab.setdefault(w.lower(), 1000 + len(vocab)),) for w in words]
    return PromptTokens(text=text, words=words, word_tokens=ids, bos=1, eos=2)


TRICKY = ["a cat", "  A  Cat,\tsitting\non (the) table!  ", "\"quoted\" 'word' ...", "", "   ", "x;y:z?", "Ünïcode Straße"]


def test_js_split_and_normalise_match_python():
    from nulltext_p2p.core.prompt_tokens import normalize_word, split_prompt

    calls = [["splitPrompt", t] for t in TRICKY] + [["normalizeWord", w] for t in TRICKY for w in t.split()]
    got = run_words(calls)
    expected = [list(split_prompt(t)) for t in TRICKY] + [normalize_word(w) for t in TRICKY for w in t.split()]
    assert got == expected


def test_js_phrase_search_matches_prompt_tokens_find():
    prompt = "A fluffy cat, sitting on a fluffy Cat mat"
    vocab: dict = {}
    tokens = fake_tokens(prompt, vocab)
    phrases = ["cat", "fluffy cat", "A", "mat", "dog", "fluffy  CAT,", "(cat)", "sitting on a"]
    got = run_words([["findPhrase", list(tokens.words), p] for p in phrases])
    for phrase, idx in zip(phrases, got):
        positions = [1 + i for i in idx]  # one token per word: word i is position i + 1
        assert positions == tokens.find(phrase), phrase


CASES = [
    # (mode, source, targets, reweight, blend_words, word_windows)
    ("replace", "a cat sitting on a table", "a tiger sitting on a table", "tiger=2", "cat, tiger", ""),
    ("replace", "a cat sitting on a table", "a tiger sitting on a table", "dog=2", "", ""),
    ("replace", "a cat sitting on a table", "a tiger sitting on a table", "", "horse", ""),
    ("replace", "a cat sitting on a table", "a tiger sitting on a table", "", "", "lion=0.5"),
    ("replace", "a cat sitting on a table", "a big cat sitting on a table", "", "", ""),
    ("replace", "a cat sitting on a table", "a Cat sitting on a table\na dog sitting on a bench", "cat=0.5, bench=2", "table", "bench=0.2-0.6"),
    ("refine", "a cat sitting on a table", "a cat sitting on a wooden table", "wooden=2", "table", ""),
    ("refine", "a cat sitting on a table", "a cat on a table", "", "", ""),
    ("refine", "a photo of a cat", "a blurry photo of a striped cat with hat", "striped cat=1.5", "cat", "hat=0.3"),
    ("replace", "a cat sitting on a table", "a tiger sitting on a table", "cat", "tiger=2", "tiger=2-1"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_js_analysis_agrees_with_the_controller(case):
    """A word the helper marks missing (or a count it flags) is exactly what the Python controller rejects;
    the helper's swapped/added words are the ones the Python mappers treat as new."""
    from nulltext_p2p.core.attention_edit import build_attention_edit, parse_word_list, parse_word_values, parse_word_windows
    from nulltext_p2p.core.prompt_tokens import PromptError

    mode, source, targets, reweight, blend, windows = case
    (analysis,) = run_words([["analyseController", {"mode": mode, "source_prompt": source, "target_prompts": targets,
                                                     "reweight": reweight, "blend_words": blend, "word_windows": windows}]])
    warnings = analysis["warnings"]
    print(case, "->", warnings)
    vocab: dict = {}
    src = fake_tokens(source, vocab)
    tgts = [fake_tokens(t.strip(), vocab) for t in targets.splitlines() if t.strip()]
    # each setting alone, as the controller checks it
    checks = {
        "reweight": lambda: build_attention_edit(src, tgts, mode, 10, reweight=parse_word_values(reweight) or None),
        "blend_words": lambda: build_attention_edit(src, tgts, mode, 10, blend_words=parse_word_list(blend) or None),
        "word_windows": lambda: build_attention_edit(src, tgts, mode, 10, word_windows=parse_word_windows(windows) or None),
        "edit": lambda: build_attention_edit(src, tgts, mode, 10),
    }
    for field, check in checks.items():
        try:
            check()
            python_error = None
        except PromptError as e:
            python_error = str(e)
        js_warned = [w for w in warnings if w.startswith(f"{field}:")] if field != "edit" else \
            [w for w in warnings if w.startswith("edit ")]
        if field == "edit" or python_error is None or "mode 'replace'" not in (python_error or ""):
            assert bool(js_warned) == (python_error is not None), (field, python_error, warnings)
        if python_error and "is not in" in python_error:
            word = python_error.split("'")[1]
            assert any(f"'{word}'" in w for w in js_warned), (word, warnings)
    # what changes
    if mode == "replace":
        for t, edit in zip(tgts, analysis["edits"]):
            if len(t.words) == len(src.words):
                swapped = [k for k in range(len(t.words)) if t.words[k] != src.words[k]]
                assert [k for k, w in enumerate(edit["words"]) if w["kind"] == "swapped"] == swapped
    else:
        from nulltext_p2p.core.seq_aligner import refinement_mapper

        for t, edit in zip(tgts, analysis["edits"]):
            mapper, alphas = refinement_mapper(src, t)
            added = [k for k in range(len(t.words)) if alphas[1 + k] == 0]
            assert [k for k, w in enumerate(edit["words"]) if w["kind"] == "added"] == added


# ------------------------------------------------------------------------------------------------------------
# The page in headless Chromium
# ------------------------------------------------------------------------------------------------------------
def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen, name: str) -> None:
    """End a process this test started (and its children: it was started in its own session)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            print(f"could not end {name} (pid {proc.pid})")


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def http_post_json(url: str, data, timeout: float = 10.0) -> int:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status


@pytest.fixture(scope="module")
def comfy_server(host, tiny_checkpoint_path, tmp_path_factory):
    """A real ComfyUI server on a free port with this pack in custom_nodes: yields its base URL."""
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    os.symlink(REPO_ROOT, base / "custom_nodes" / PACK_DIR_NAME, target_is_directory=True)
    # placeholders for model-loader nodes this host could not load (the frontend needs them: see that file)
    os.symlink(REPO_ROOT / "tests" / "js" / "frontend_stub_nodes.py", base / "custom_nodes" / "frontend_stub_nodes.py")
    (base / "models" / "checkpoints").mkdir(parents=True)
    os.symlink(tiny_checkpoint_path, base / "models" / "checkpoints" / os.path.basename(tiny_checkpoint_path))
    for d in ("user", "input", "output", "temp"):
        (base / d).mkdir()
    port = free_port()
    log_path = base / "server.log"
    log = open(log_path, "wb")
    cmd = [sys.executable, str(REPO_ROOT / "tests" / "js" / "comfy_server.py"), str(host.path), "--cpu",
           "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base), "--disable-auto-launch",
           "--disable-api-nodes", "--database-url", "sqlite:///:memory:"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(host.path), env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the ComfyUI server exited with {proc.returncode}; log {log_path}:\n"
                            + log_path.read_text(errors="replace")[-4000:])
            try:
                status, body = http_get(f"{url}/object_info/NTP_AttentionController", timeout=5)
                if status == 200 and b"NTP_AttentionController" in body:
                    break
            except OSError:
                pass
            if time.monotonic() - t0 > SERVER_START_TIMEOUT:
                pytest.fail(f"the ComfyUI server did not serve the pack within {SERVER_START_TIMEOUT}s; log {log_path}:\n"
                            + log_path.read_text(errors="replace")[-4000:])
            time.sleep(1.0)
        print(f"ComfyUI server up at {url} in {time.monotonic() - t0:.1f}s (log {log_path})")
        # skip the first-run template browser so it does not cover the canvas
        http_post_json(f"{url}/settings", {"Comfy.TutorialCompleted": True})
        yield url
    finally:
        kill_group(proc, "the ComfyUI server")
        log.close()


class CDP:
    """Minimal Chrome DevTools Protocol client over aiohttp's websocket (one page target)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 0
        self.console: list[str] = []
        self.pending: dict[int, asyncio.Future] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(data["params"]["type"] + ": " + " ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                d = data["params"]["exceptionDetails"]
                self.console.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))

    async def call(self, method: str, timeout: float = STEP_TIMEOUT, **params):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        data = await asyncio.wait_for(fut, timeout)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return data["result"]

    async def js(self, expression: str, timeout: float = STEP_TIMEOUT):
        """Evaluate (awaiting a promise) and return the JSON value; a thrown error fails with its message."""
        res = await self.call("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                              returnByValue=True)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise AssertionError(f"page error: {d.get('exception', {}).get('description', d.get('text'))}\n"
                                 f"console: {self.console[-20:]}")
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str):
        t0 = time.monotonic()
        while True:
            value = await self.js(expression)
            if value:
                return value
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; console: {self.console[-30:]}")
            await asyncio.sleep(0.5)

    async def screenshot(self, path: Path) -> Path:
        res = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(res["data"]))
        return path


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        msg = ("!!! Chromium NOT FOUND: the browser test of the js/ extension is SKIPPED. "
               "Install it with `apt-get install -y chromium` (Debian) to run it. !!!")
        print("\n" + msg)
        warnings.warn(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    """Headless Chromium with a fresh profile: yields the page target's DevTools websocket URL."""
    profile = tmp_path_factory.mktemp("chromium_profile")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
           "--remote-allow-origins=*", "--window-size=1400,1000", "about:blank"]
    log_path = profile.parent / (profile.name + ".log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        t0 = time.monotonic()
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                pytest.fail(f"Chromium did not start (rc {proc.poll()}); log {log_path}:\n" + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        port = int(port_file.read_text().splitlines()[0])
        t0 = time.monotonic()
        while True:
            status, body = http_get(f"http://127.0.0.1:{port}/json/list")
            pages = [t for t in json.loads(body or b"[]") if t.get("type") == "page"] if status == 200 else []
            if pages:
                break
            if time.monotonic() - t0 > 30:
                pytest.fail("Chromium shows no page target")
            time.sleep(0.2)
        yield pages[0]["webSocketDebuggerUrl"]
    finally:
        kill_group(proc, "Chromium")
        log.close()


CONTROLLER_INPUTS = {"clip", "source_prompt", "target_prompts", "mode", "cross_replace", "self_replace", "word_windows",
                     "reweight", "blend_words", "blend_threshold", "blend_start"}

# Page-side helpers (evaluated once after load).
PAGE_HELPERS = r"""
window.ntpTest = {
  ctl() { return app.graph._nodes.find((n) => n.type === "NTP_AttentionController"); },
  widget(name) { return this.ctl().widgets.find((w) => w.name === name); },
  set(name, value) { const w = this.widget(name); w.value = value; w.callback?.(value); app.graph.setDirtyCanvas(true, true); },
  frames(n = 5) { return new Promise((r) => { let k = 0; const f = () => (++k >= n ? r() : requestAnimationFrame(f)); requestAnimationFrame(f); }); },
  helper() {
    const els = [...document.querySelectorAll('[data-ntp="word-helper"]')];
    const root = els.find((e) => e.isConnected && e.offsetParent !== null) ?? els[0];
    if (!root) return null;
    const r = root.getBoundingClientRect();
    return {
      visible: root.offsetParent !== null && r.width > 50 && r.height > 20,
      rect: [r.x, r.y, r.width, r.height],
      text: root.innerText,
      warnings: [...root.querySelectorAll('[data-kind="warning"]')].map((e) => e.textContent),
      swapped: [...root.querySelectorAll(".ntp-swapped[data-word]")].map((e) => e.dataset.word),
      added: [...root.querySelectorAll(".ntp-added[data-word]")].map((e) => e.dataset.word),
      reweighted: [...root.querySelectorAll(".ntp-reweight[data-word]")].map((e) => e.textContent),
      blend: [...root.querySelectorAll(".ntp-blend[data-word]")].map((e) => e.dataset.word),
      edits: [...root.querySelectorAll(".ntp-edit")].length,
      contentHeight: root.querySelector(".ntp-content")?.offsetHeight ?? 0,
    };
  },
  focusAll() {  // the whole graph at 100 %, below the tab bar
    const ds = app.canvas.ds;
    ds.scale = 1;
    ds.offset[0] = -Math.min(...app.graph._nodes.map((n) => n.pos[0])) + 70;
    ds.offset[1] = -Math.min(...app.graph._nodes.map((n) => n.pos[1])) + 120;
    app.graph.setDirtyCanvas(true, true);
  },
};
true
"""


async def _drive_page(ws_url: str, base_url: str, ckpt_name: str, shots: Path) -> dict:
    import aiohttp

    results: dict = {"screenshots": []}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url, max_msg_size=0) as ws:
            cdp = CDP(ws)
            await cdp.call("Runtime.enable")
            await cdp.call("Page.enable")
            await cdp.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
            await cdp.call("Page.navigate", url=base_url + "/")
            await cdp.wait_for("!!(window.app && window.app.graph && window.LiteGraph && "
                               "LiteGraph.registered_node_types['NTP_AttentionController'] && "
                               "app.extensionManager !== undefined)", PAGE_TIMEOUT, "the ComfyUI page and node definitions")
            exts = await cdp.js("(app.extensions || []).map((e) => e.name)")
            assert "nulltext_p2p.AttentionControllerWords" in exts, f"extension not registered: {exts}; {cdp.console[-20:]}"
            await cdp.js(PAGE_HELPERS)
            await cdp.js("document.querySelectorAll('.p-dialog-mask').forEach((e) => e.remove()), true")

            # 1. A fresh graph: Load Checkpoint (the tiny checkpoint) -> Attention Controller.
            ids = await cdp.js(f"""(async () => {{
                app.graph.clear();
                const ck = LiteGraph.createNode("CheckpointLoaderSimple");
                ck.pos = [40, 160]; app.graph.add(ck);
                ck.widgets.find((w) => w.name === "ckpt_name").value = {json.dumps(ckpt_name)};
                const n = LiteGraph.createNode("NTP_AttentionController");
                n.pos = [400, 120]; app.graph.add(n);
                ck.connect(1, n, 0);
                ntpTest.focusAll();
                await ntpTest.frames(10);
                return [ck.id, n.id, ck.widgets.find((w) => w.name === "ckpt_name").options.values];
            }})()""")
            ctl_id = ids[1]
            assert ckpt_name in ids[2], f"the tiny checkpoint is not listed: {ids[2]}"
            h = await cdp.wait_for("(() => { const h = ntpTest.helper(); return h && h.visible && h; })()", 30,
                                   "the word helper under the controller's widgets")
            print("helper (defaults):", h)
            assert h["swapped"] == ["tiger"] and h["warnings"] == [] and h["edits"] == 1
            assert "sitting" in h["text"] and "cat" in h["text"]
            assert h["contentHeight"] <= h["rect"][3] <= h["contentHeight"] + 30, f"the helper fits its content: {h}"
            results["default"] = h

            # 2. Reweight and blend words in the prompts: marked, no warning.
            await cdp.js("ntpTest.set('reweight', 'tiger=2'); ntpTest.set('blend_words', 'cat, tiger'); ntpTest.frames()")
            h = await cdp.js("ntpTest.helper()")
            print("helper (reweight tiger=2, blend cat, tiger):", h)
            assert h["warnings"] == [], h
            assert h["reweighted"] and "tiger" in h["reweighted"][0] and "\u00d72" in h["reweighted"][0]
            assert sorted(h["blend"]) == ["cat", "tiger"]
            results["marked"] = h

            # 3. The helper is not a graph input: the API prompt and the saved workflow are unchanged.
            prompt = await cdp.js("app.graphToPrompt().then((p) => p.output)")
            ctl_inputs = prompt[str(ctl_id)]["inputs"]
            assert set(ctl_inputs) == CONTROLLER_INPUTS, sorted(ctl_inputs)
            assert ctl_inputs["reweight"] == "tiger=2"
            saved = await cdp.js("JSON.parse(JSON.stringify(app.graph.serialize()))")
            ctl_saved = next(n for n in saved["nodes"] if n["type"] == "NTP_AttentionController")
            assert len(ctl_saved["widgets_values"]) == len(CONTROLLER_INPUTS) - 1, ctl_saved["widgets_values"]

            # 4. Load that workflow back (onConfigure path): the helper shows the loaded values.
            await cdp.js(f"app.loadGraphData({json.dumps(saved)}).then(() => ntpTest.frames(10))")
            await cdp.js("ntpTest.focusAll(); ntpTest.frames(10)")
            h = await cdp.wait_for("(() => { const h = ntpTest.helper(); return h && h.visible && h.reweighted.length && h; })()", 30,
                                   "the helper after loading the workflow")
            assert h["swapped"] == ["tiger"] and h["warnings"] == [] and sorted(h["blend"]) == ["cat", "tiger"]
            shot = await cdp.screenshot(shots / "ntp_controller_ok.png")
            results["screenshots"].append(str(shot))

            # 5. Type a second edit into the target_prompts textarea (real key input): refine-style added word in
            #    replace mode is flagged; a reweight word missing from the prompts is flagged.
            await cdp.js("""(() => { const w = ntpTest.widget('target_prompts'); const el = w.inputEl ?? w.element;
                el.focus(); el.setSelectionRange(el.value.length, el.value.length); return true; })()""")
            await cdp.call("Input.insertText", text="\na big dog sitting on a table")
            await cdp.js("ntpTest.set('reweight', 'tiger=2, zebra=3'); ntpTest.frames(10)")
            h = await cdp.wait_for("(() => { const h = ntpTest.helper(); return h && h.warnings.length >= 2 && h; })()", 30,
                                   "the warnings")
            print("helper (warnings):", h)
            assert h["edits"] == 2
            assert any("reweight" in w and "'zebra'" in w and "not in the edited prompt" in w for w in h["warnings"]), h["warnings"]
            assert any("edit 2" in w and "same number of words" in w and "refine" in w for w in h["warnings"]), h["warnings"]
            # 6. refine mode: the added words are shown, the count warning goes; a missing blend word warns.
            await cdp.js("ntpTest.set('mode', 'refine'); ntpTest.set('blend_words', 'cat, tiger, horse'); ntpTest.frames(10)")
            h = await cdp.js("ntpTest.helper()")
            print("helper (refine):", h)
            assert "big" in h["added"] and "dog" in h["added"]
            assert not any("same number of words" in w for w in h["warnings"])
            assert any("blend_words" in w and "'horse'" in w for w in h["warnings"]), h["warnings"]
            assert any("'zebra'" in w for w in h["warnings"])
            assert h["contentHeight"] <= h["rect"][3], f"the helper shows all its content: {h}"
            await cdp.js("ntpTest.focusAll(); ntpTest.frames(10)")
            # the warning is inside the node's area on screen
            inside = await cdp.js("""(() => { const n = ntpTest.ctl(); const h = ntpTest.helper();
                const c = app.canvas.canvas.getBoundingClientRect(); const ds = app.canvas.ds;
                const x0 = c.x + (n.pos[0] + ds.offset[0]) * ds.scale, y0 = c.y + (n.pos[1] + ds.offset[1]) * ds.scale;
                const x1 = x0 + n.size[0] * ds.scale, y1 = y0 + n.size[1] * ds.scale; const [x, y, w, hh] = h.rect;
                return x >= x0 - 2 && x + w <= x1 + 2 && y >= y0 - 2 && y + hh <= y1 + 2; })()""")
            assert inside, "the helper (with its warnings) is drawn inside the node"
            shot = await cdp.screenshot(shots / "ntp_controller_warnings.png")
            results["screenshots"].append(str(shot))
            results["warnings"] = h["warnings"]
            errors = [c for c in cdp.console if "nulltext_p2p" in c or ("exception" in c and "ntp" in c.lower())]
            assert not errors, errors
            cdp.reader.cancel()
    return results


def test_js_served_by_the_host(comfy_server):
    status, body = http_get(f"{comfy_server}/extensions/{PACK_DIR_NAME}/nulltext_p2p.js")
    assert status == 200 and b"registerExtension" in body
    status, body = http_get(f"{comfy_server}/extensions/{PACK_DIR_NAME}/ntp_words.js")
    assert status == 200 and b"analyseController" in body
    status, body = http_get(f"{comfy_server}/extensions/{PACK_DIR_NAME}/docs/NTP_AttentionMaps.md")
    assert status == 200 and b"Attention Maps" in body
    status, body = http_get(f"{comfy_server}/extensions")
    assert status == 200 and f"/extensions/{PACK_DIR_NAME}/nulltext_p2p.js".encode() in body


def test_word_helper_in_headless_chromium(browser, comfy_server, tiny_checkpoint_path):
    shots = Path(tempfile.mkdtemp(prefix="ntp_screens_"))
    results = asyncio.run(asyncio.wait_for(
        _drive_page(browser, comfy_server, os.path.basename(tiny_checkpoint_path), shots), PAGE_TIMEOUT + 240))
    for path in results["screenshots"]:
        print(f"screenshot: {path}")
    shutil.copyfile(results["screenshots"][-1], SCREENSHOT_COPY)
    print(f"screenshot copied to {SCREENSHOT_COPY}")
    from PIL import Image

    im = Image.open(SCREENSHOT_COPY)
    assert im.size == (1400, 1000)
