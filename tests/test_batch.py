"""``python -m runner batch``: the captions CSV, one prompt per photo, resumable results, and several servers.

Pure tests first; then a batch of 3 tiny photos in this process (the CLI), and a batch over 2 real ComfyUI servers
started here on loopback (``main.py --cpu``, a temp ``--base-directory`` with this pack and the tiny checkpoint),
one of them killed while it has a photo. Every run: 128x128 photos (16x16 latents), DDIM Invert 2 steps, Null-Text
Optimize 1 inner step.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nulltext_p2p.runner.captions import Row, photo_id, read_captions
from nulltext_p2p.runner.errors import UsageError
from nulltext_p2p.runner.photo_prompt import prepare_photo_prompt
from nulltext_p2p.runner.staging import BatchOutput, local_name, output_items

REPO_ROOT = Path(__file__).resolve().parent.parent
WORD_SWAP = REPO_ROOT / "example_workflows" / "word_swap.json"
FAST = ["DDIM Invert.steps=2", "Null-Text Optimize.inner_steps=1", "Resize to 512x512.width=128",
        "Resize to 512x512.height=128"]
CAPTIONS = (
    "file,source,targets,blend,reweight\n"
    "cat.png,a cat sitting on a table,a tiger sitting on a table,\"cat, tiger\",\n"
    "dog.png,a dog lying on the grass,a fox lying on the grass | a wolf lying on the grass,,fox=2\n"
    "sub/car.png,a red car on a street,a blue car on a street,,\n"
)


# ----------------------------------------------------------------------------------------------------------------
# The captions file (pure)
# ----------------------------------------------------------------------------------------------------------------
def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_read_captions(tmp_path):
    rows = read_captions(write(tmp_path / "c.csv", CAPTIONS))
    assert [r.file for r in rows] == ["cat.png", "dog.png", "sub/car.png"]
    assert rows[0].blend == "cat, tiger" and rows[0].reweight == "" and rows[0].mode == ""
    assert rows[1].targets == ["a fox lying on the grass", "a wolf lying on the grass"] and rows[1].reweight == "fox=2"
    assert rows[2].photo_id == "sub_car_png"
    multiline = 'file,source,targets\nx.png,a cat,"a dog\na fox"\n'
    assert read_captions(write(tmp_path / "m.csv", multiline))[0].targets == ["a dog", "a fox"]
    example = read_captions(str(REPO_ROOT / "example_workflows" / "captions.csv"))
    assert len(example) == 4 and example[3].mode == "refine"


@pytest.mark.parametrize("text, message", [
    ("file,source\ncat.png,a cat\n", "no column 'targets'"),
    ("file,source,targets,colour\ncat.png,a cat,a dog,red\n", "unknown column"),
    ("file,source,targets\ncat.png,,a dog\n", "line 2: the column 'source' is empty"),
    ("file,source,targets,mode\ncat.png,a cat,a dog,swap\n", "line 2: mode 'swap' is not one of replace, refine"),
    ("file,source,targets\ncat.png,a cat,a dog\ncat.png,a cat,a fox\n", "line 3: 'cat.png' names the same photo as line 2"),
    ("file,source,targets\ncat.png,a cat,a dog,cat, dog\n", "more values than columns"),
    ("file,source,targets\n", "no rows"),
])
def test_bad_captions_name_the_line(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        read_captions(write(tmp_path / "c.csv", text))


def test_photo_ids_and_output_names():
    assert photo_id("cats/Tom & Jerry.JPG") == "cats_Tom___Jerry_JPG"
    assert local_name({"filename": "a_00001_.png", "subfolder": "cat_png-1234/sub"}, "cat_png-1234") == "sub/a_00001_.png"
    assert local_name({"filename": "cat_png_00001.safetensors", "subfolder": "nulltext_p2p"}, "cat_png-1234") == \
        "nulltext_p2p/cat_png_00001.safetensors"
    ui = {"3": {"images": [{"filename": "a.png", "subfolder": "x", "type": "output"},
                           {"filename": "p.png", "subfolder": "", "type": "temp"}]}, "4": {"text": ["hello"]}}
    assert output_items(ui) == [{"filename": "a.png", "subfolder": "x", "type": "output"}]


def test_finish_is_one_rename_and_a_rerun_cleans_the_staging(tmp_path):
    out = BatchOutput(str(tmp_path / "out"))
    out.prepare()
    row = Row("cat.png", "a cat", ["a dog"])
    name, attempt = out.new_attempt(row)
    (attempt / "img.png").write_bytes(b"x")
    assert out.finished(row) is None
    files = out.finish(row, attempt, {"seconds": 1.0})
    assert files == ["cat_png/img.png"] and not attempt.exists()  # the outputs; result.json lists them
    assert out.finished(row)["outputs"] == files
    _, left = out.new_attempt(row)  # an interrupted attempt
    (left / "half.png").write_bytes(b"half")
    out.prepare()
    assert list(out.staging.iterdir()) == [] and out.finished(row) is not None
    out.close()
    assert not out.staging.exists() and out.finished(row) is not None


def test_cli_batch_usage_errors(tmp_path, capsys):
    from nulltext_p2p.runner.cli import main

    (tmp_path / "photos").mkdir()
    argv = ["batch", str(tmp_path / "photos"), "--workflow", str(WORD_SWAP)]
    assert main(argv + ["--captions", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err
    assert "--captions" in err and "no such file" in err
    bad = write(tmp_path / "bad.csv", "file,source\ncat.png,a cat\n")
    assert main(argv + ["--captions", bad]) == 2
    assert "no column 'targets'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# One photo's prompt (the host's node definitions)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host_defs(host):
    from nulltext_p2p.runner.app import prepare_in_process
    from nulltext_p2p.runner.comfy_host import run_sync

    return run_sync(prepare_in_process(str(host.path)))


def test_photo_prompt(host_defs):
    from nulltext_p2p.runner.app import build_prompt, load_workflow

    host, definitions = host_defs
    base = build_prompt(load_workflow(str(WORD_SWAP)), definitions, "nulltext_p2p/dog.png")
    row = Row("dog.png", "a dog lying on the grass", ["a fox lying on the grass", "a wolf lying on the grass"],
              blend="dog, fox", reweight="fox=2", mode="refine")
    photo = prepare_photo_prompt(base, definitions, row, "dog_png-0001")
    p = photo.prompt
    by_type = {}
    for nid, node in p.items():
        by_type.setdefault(node["class_type"], []).append(nid)
    (ctrl,) = by_type["NTP_AttentionController"]
    caption = p[p[ctrl]["inputs"]["source_prompt"][0]]
    assert caption["inputs"]["value"] == row.source  # the "Source caption" primitive feeds both
    assert p[ctrl]["inputs"]["target_prompts"] == "a fox lying on the grass\na wolf lying on the grass"
    assert (p[ctrl]["inputs"]["blend_words"], p[ctrl]["inputs"]["reweight"], p[ctrl]["inputs"]["mode"]) == \
        ("dog, fox", "fox=2", "refine")
    assert [p[n]["inputs"]["filename_prefix"] for n in by_type["SaveImage"]] == ["dog_png-0001/word_swap"]
    (save,) = by_type["NTP_SaveInversion"]
    (edit,) = by_type["NTP_EditedSample"]
    assert p[save]["inputs"]["filename_prefix"] == "dog_png" and p[save]["inputs"]["source_prompt"] == row.source
    assert p[save]["inputs"]["null_embeddings"] == p[edit]["inputs"]["null_embeddings"]
    (check,) = by_type["NTP_ReconstructionCheck"]
    assert photo.psnr_node == check and p[check]["inputs"]["reconstruction"][0] in by_type["VAEDecode"]
    assert base == build_prompt(load_workflow(str(WORD_SWAP)), definitions, "nulltext_p2p/dog.png")  # not changed
    many = build_prompt(load_workflow(str(REPO_ROOT / "example_workflows" / "invert_once_edit_many.json")), definitions)
    with pytest.raises(UsageError, match="one Attention Controller"):
        prepare_photo_prompt(many, definitions, row, "x")


# ----------------------------------------------------------------------------------------------------------------
# Batches that run
# ----------------------------------------------------------------------------------------------------------------
def make_photos(folder: Path) -> str:
    import numpy as np
    from PIL import Image

    (folder / "sub").mkdir(parents=True)
    for k, name in enumerate(["cat.png", "dog.png", "sub/car.png"]):
        yy, xx = np.mgrid[0:128, 0:128] / 127
        blob = np.exp(-((xx - 0.3 - 0.2 * k) ** 2 + (yy - 0.5) ** 2) / 0.04)
        rgb = np.stack([0.3 + 0.4 * xx + 0.3 * blob, 0.5 + 0.2 * yy - 0.2 * blob, 0.4 + 0.1 * k + 0.0 * xx], -1)
        Image.fromarray((np.clip(rgb, 0, 1) * 255).astype("uint8")).save(folder / name)
    return write(folder / "captions.csv", CAPTIONS)


def summary(out: Path) -> dict:
    with open(out / "summary.csv", encoding="utf-8", newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def check_results(out: Path, rows: list, expect_images: dict) -> None:
    """Every photo done once: its folder holds the images, one inversion and result.json, nothing else; no
    temporary or half-written file anywhere."""
    from PIL import Image

    dirs = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert dirs == sorted(photo_id(r) for r in rows)
    assert not (out / ".staging").exists()  # removed after a batch that was not interrupted
    assert not [p for p in out.rglob("*.tmp")]
    table = summary(out)
    for r in rows:
        folder = out / photo_id(r)
        pngs = sorted(folder.glob("*.png"))
        inversions = list((folder / "nulltext_p2p").glob("*.safetensors"))
        assert len(pngs) == expect_images[r] and len(inversions) == 1, [str(p) for p in folder.rglob("*")]
        for png in pngs:
            with Image.open(png) as img:
                img.load()
                assert img.size == (128, 128)
        result = json.loads((folder / "result.json").read_text())
        assert result["file"] == r and result["psnr"] is not None
        entry = table[r]
        assert entry["status"] in ("done", "skipped") and entry["error"] == ""
        assert float(entry["psnr"]) == pytest.approx(result["psnr"], abs=0.01)
        assert sorted(entry["outputs"].split("; ")) == sorted(result["outputs"])
        assert all((out / o).is_file() for o in result["outputs"])


def test_batch_in_process(host_defs, tiny_checkpoint_name, tmp_path, capsys):
    """3 photos through the CLI; a rerun skips them; after a 'crash' only the missing photo runs again."""
    from nulltext_p2p.runner.cli import main

    host, _ = host_defs
    captions = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    argv = ["batch", str(tmp_path / "photos"), "--workflow", str(WORD_SWAP), "--captions", captions,
            "--checkpoint", tiny_checkpoint_name, "--output-dir", str(out), "--input-dir", str(tmp_path / "in"),
            "--comfyui", str(host.path), "-q"] + [x for s in FAST for x in ("--set", s)]
    t0 = time.monotonic()
    assert main(argv) == 0
    first = time.monotonic() - t0
    printed = capsys.readouterr()
    print(printed.out)
    assert "cat.png" in printed.out and "PSNR" in printed.out
    images = {"cat.png": 3, "dog.png": 4, "sub/car.png": 3}  # source | reconstruction | edit(s)
    check_results(out, list(images), images)
    assert {r["status"] for r in summary(out).values()} == {"done"}

    t0 = time.monotonic()
    assert main(argv) == 0  # everything finished: nothing runs
    again = time.monotonic() - t0
    assert {r["status"] for r in summary(out).values()} == {"skipped"}
    check_results(out, list(images), images)

    # a crash while dog.png ran: its folder is absent, a half-written attempt is left in .staging
    import shutil

    shutil.rmtree(out / "dog_png")
    (out / ".staging" / "dog_png-deadbeef").mkdir(parents=True)
    (out / ".staging" / "dog_png-deadbeef" / "word_swap_00001_.png").write_bytes(b"\x89PNG half")
    assert main(argv) == 0
    table = summary(out)
    assert table["dog.png"]["status"] == "done" and table["cat.png"]["status"] == "skipped"
    check_results(out, list(images), images)
    print(f"in-process batch: 3 photos in {first:.1f} s, rerun (all skipped) {again:.1f} s")


def test_batch_records_a_failing_photo_and_goes_on(host_defs, tiny_checkpoint_name, tmp_path):
    from nulltext_p2p.runner.batch import batch_in_process
    from nulltext_p2p.runner.comfy_host import run_sync

    host, _ = host_defs
    make_photos(tmp_path / "photos")
    captions = write(tmp_path / "bad.csv", "file,source,targets,blend\n"
                                           "cat.png,a cat sitting on a table,a tiger sitting on a table,zebra\n"
                                           "missing.png,a cat,a dog,\n"
                                           "dog.png,a dog lying on the grass,a fox lying on the grass,\n")
    result = run_sync(batch_in_process(str(tmp_path / "photos"), str(WORD_SWAP), captions, str(tmp_path / "out"),
                                       tiny_checkpoint_name, FAST, str(host.path), str(tmp_path / "in")))
    by_file = {o.row.file: o for o in result.outcomes}
    assert by_file["cat.png"].status == "error" and "blend_words" in by_file["cat.png"].error
    assert "zebra" in by_file["cat.png"].error
    assert by_file["missing.png"].status == "error" and "no such file" in by_file["missing.png"].error
    assert by_file["dog.png"].status == "done"
    assert not (tmp_path / "out" / "cat_png").exists()
    assert summary(tmp_path / "out")["cat.png"]["status"] == "error"


# ----------------------------------------------------------------------------------------------------------------
# Two real servers, one killed mid-batch
# ----------------------------------------------------------------------------------------------------------------
SERVER_START_TIMEOUT = 400  # s; two hosts import torch and their nodes at once on busy cores


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/object_info/NTP_AttentionController", timeout=5) as r:
            return r.status == 200 and b"NTP_AttentionController" in r.read()
    except OSError:
        return False


@pytest.fixture(scope="module")
def two_servers(host, tiny_checkpoint_path, tmp_path_factory):
    """Two ComfyUI servers (this pack, the tiny checkpoint) on free loopback ports: yields [(url, process)]."""
    started = []
    try:
        for k in range(2):
            base = tmp_path_factory.mktemp(f"server{k}")
            (base / "custom_nodes").mkdir()
            os.symlink(REPO_ROOT, base / "custom_nodes" / "nulltext_p2p", target_is_directory=True)
            (base / "models" / "checkpoints").mkdir(parents=True)
            os.symlink(tiny_checkpoint_path, base / "models" / "checkpoints" / os.path.basename(tiny_checkpoint_path))
            for d in ("user", "input", "output", "temp"):
                (base / d).mkdir()
            port = free_port()
            log = open(base / "server.log", "wb")
            cmd = [sys.executable, str(REPO_ROOT / "tests" / "js" / "comfy_server.py"), str(host.path), "--cpu",
                   "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
                   "--disable-auto-launch", "--disable-api-nodes", "--database-url", "sqlite:///:memory:"]
            env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(host.path), env=env,
                                    start_new_session=True)
            started.append((f"http://127.0.0.1:{port}", proc, base, log))
        t0 = time.monotonic()
        waiting = list(started)
        while waiting:
            for item in list(waiting):
                url, proc, base, _ = item
                if proc.poll() is not None:
                    pytest.fail(f"server {url} exited with {proc.returncode}:\n"
                                + (base / "server.log").read_text(errors="replace")[-3000:])
                if server_up(url):
                    waiting.remove(item)
            if time.monotonic() - t0 > SERVER_START_TIMEOUT:
                pytest.fail(f"servers not up in {SERVER_START_TIMEOUT} s")
            time.sleep(1.0)
        print(f"2 ComfyUI servers up in {time.monotonic() - t0:.0f} s")
        yield [(url, proc) for url, proc, _, _ in started]
    finally:
        for url, proc, base, log in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            log.close()


def test_batch_over_two_servers_one_killed(two_servers, tiny_checkpoint_name, tmp_path):
    """Server B is killed while it runs its second photo: that photo goes back to the queue and server A does it;
    every photo is done exactly once and the summary says where."""
    from nulltext_p2p.runner.batch import batch_remote

    (url_a, proc_a), (url_b, proc_b) = two_servers
    captions = make_photos(tmp_path / "photos")
    with open(captions, "a", encoding="utf-8") as f:  # a fourth photo: B gets two
        f.write("cat2.png,a cat sitting on a table,a dog sitting on a table,\n")
    import shutil

    shutil.copy(tmp_path / "photos" / "cat.png", tmp_path / "photos" / "cat2.png")
    b_queued, killed, a_may_go_on = [], threading.Event(), threading.Event()
    events = []

    def on_event(event, url, row):
        events.append((event, url, row.file))
        if url == url_b and event == "queued":
            b_queued.append(row.file)
            if len(b_queued) == 2:  # B is running its second photo: stop it (no goodbye)
                os.killpg(proc_b.pid, signal.SIGKILL)
                proc_b.wait(timeout=30)
                killed.set()
        if url == url_b and event in ("server-lost", "failed"):
            a_may_go_on.set()
        if url == url_a and event == "done" and not killed.is_set():
            # hold A after each photo until B has had its second one (so the kill falls mid-batch, deterministically)
            a_may_go_on.wait(timeout=600)

    out = tmp_path / "out"
    t0 = time.monotonic()
    result = batch_remote([url_a, url_b], str(tmp_path / "photos"), str(WORD_SWAP), captions, str(out),
                          tiny_checkpoint_name, FAST, on_event=on_event)
    seconds = time.monotonic() - t0
    for e in events:
        print(e)
    assert killed.is_set(), events
    lost = b_queued[1]
    rows = ["cat.png", "dog.png", "sub/car.png", "cat2.png"]
    images = {"cat.png": 3, "dog.png": 4, "sub/car.png": 3, "cat2.png": 3}
    check_results(out, rows, images)
    table = summary(out)
    print("\n".join(f"{r}: {table[r]}" for r in rows))
    assert {table[r]["status"] for r in rows} == {"done"} and not result.failed
    assert table[b_queued[0]]["server"] == url_b and table[b_queued[0]]["attempts"] == "1"
    assert table[lost]["server"] == url_a and table[lost]["attempts"] == "2"  # retried on A
    assert sum(1 for r in rows if table[r]["server"] == url_a) == 3
    done_events = [e for e in events if e[0] == "done"]
    assert sorted(f for _, _, f in done_events) == sorted(rows)  # each photo finished exactly once
    print(f"batch over 2 servers (B killed mid-batch): {seconds:.1f} s")
