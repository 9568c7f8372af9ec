"""``python -m runner batch FOLDER --workflow W --captions captions.csv``: one workflow run per photo.

The captions file (CSV, UTF-8, a header row; ``example_workflows/captions.csv``)::

    file,source,targets,blend,reweight,mode
    cat.jpg,a cat sitting on a table,a tiger sitting on a table,"cat, tiger",,
    dog.png,a dog lying on the grass,a fox lying on the grass | a wolf lying on the grass,"dog, fox, wolf",,
    car.jpg,a red car on a street,a blue car on a street,,blue=2,

``file`` (a path relative to FOLDER), ``source`` (the caption of the photo) and ``targets`` (the edited captions,
separated by ``|`` or new lines) are required; ``blend`` (local-blend words), ``reweight`` (``word=factor``) and
``mode`` (replace/refine) are optional columns and may be empty. Empty or absent ``blend``/``reweight`` mean none
(the workflow's own values belong to its example caption); empty or absent ``mode`` keeps the workflow's.

For every row the workflow gets the photo (every Load Image), the source caption (the Attention Controller's
``source_prompt`` and the text encoder feeding DDIM Invert, following links to a primitive such as the examples'
"Source caption"), the targets, blend words, reweight and mode (the one Attention Controller), a Save Inversion
(added if the workflow has none) and a Reconstruction Check of the reconstruction (row 0 of Edited Sample, added if
the workflow has none) for the PSNR.

Results: ``OUT/<photo id>/`` per finished photo (``<photo id>`` = the file name with every character other than
letters, digits, ``-`` and ``_`` made ``_``): the saved images, ``nulltext_p2p/<photo id>_00001.safetensors`` (the
inversion: copy it into ComfyUI/output/nulltext_p2p/ to edit again with Load Inversion) and ``result.json``. A photo
runs in ``OUT/.staging/<photo id>-<token>/`` and is moved into place by one directory rename once everything is
there, so ``OUT/<photo id>/`` is complete or absent: a rerun skips the photos that have it (``--redo`` runs them
again) and removes what a crash or Ctrl-C left in ``.staging``. ``OUT/summary.csv`` (written atomically at the end,
also after Ctrl-C) has one row per photo: status (done, skipped = done by an earlier run, error), seconds,
reconstruction PSNR/SSIM, server, attempts, output files and the error.

In-process (the default) the photos run one after the other in one PromptExecutor (the checkpoint loads once).
With ``--url`` (repeatable) every server gets one photo at a time from a shared work queue; a photo whose server
dies (or does not answer) goes back to the queue for another server, and that server takes no more photos. ComfyUI
itself does the work, through its HTTP API (the same requests as ``run --url``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import re
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from .convert import node_inputs
from .errors import ExecutionError, RunnerError, UsageError

COLUMNS_REQUIRED = ("file", "source", "targets")
COLUMNS_OPTIONAL = ("blend", "reweight", "mode")
MODES = ("replace", "refine")
STAGING = ".staging"
RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = ("file", "status", "seconds", "psnr", "ssim", "server", "attempts", "outputs", "error")
DEFAULT_OUTPUT = "nulltext_p2p_batch"  # inside FOLDER
IN_PROCESS = "in-process"
_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


# ----------------------------------------------------------------------------------------------------------------
# The captions file
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One photo of the batch (a row of the captions file)."""

    file: str
    source: str
    targets: list
    blend: str = ""
    reweight: str = ""
    mode: str = ""
    line: int = 0

    @property
    def photo_id(self) -> str:
        return photo_id(self.file)

    def as_dict(self) -> dict:
        return {"file": self.file, "source": self.source, "targets": list(self.targets), "blend": self.blend,
                "reweight": self.reweight, "mode": self.mode}


def photo_id(file: str) -> str:
    """``cats/tom.jpg`` -> ``cats_tom_jpg``: the name of the photo's result folder and files."""
    return _ID_CHARS.sub("_", file.replace("\\", "/").strip("/")) or "_"


def split_targets(text: str) -> list:
    return [t.strip() for t in re.split(r"[|\n]", text or "") if t.strip()]


def read_captions(path: str) -> list:
    """Parse and check the captions CSV (UsageError naming the line and the column)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"--captions {path}: no such file.")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--captions {path}: cannot read it as UTF-8 text ({e}).") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    fmt = ("expected a header row 'file,source,targets' (optional columns: blend, reweight, mode), e.g.\n"
           "  file,source,targets,blend\n  cat.jpg,a cat sitting on a table,a tiger sitting on a table,\"cat, tiger\"")
    missing = [c for c in COLUMNS_REQUIRED if c not in header]
    if missing:
        raise UsageError(f"--captions {path}: no column {', '.join(repr(m) for m in missing)}; {fmt}")
    unknown = [h for h in header if h and h not in COLUMNS_REQUIRED + COLUMNS_OPTIONAL]
    if unknown:
        raise UsageError(f"--captions {path}: unknown column(s) {', '.join(repr(u) for u in unknown)}; {fmt}")
    reader.fieldnames = header
    rows, seen = [], {}
    for record in reader:
        line = reader.line_num
        values = {k: (v or "").strip() for k, v in record.items() if k}
        if not any(values.values()):
            continue
        if None in record and record[None]:
            raise UsageError(f"--captions {path}, line {line}: more values than columns (quote a value that "
                             "contains commas: \"cat, tiger\").")
        where = f"--captions {path}, line {line}"
        for column in COLUMNS_REQUIRED:
            if not values.get(column):
                raise UsageError(f"{where}: the column '{column}' is empty.")
        targets = split_targets(values["targets"])
        mode = values.get("mode", "").lower()
        if mode and mode not in MODES:
            raise UsageError(f"{where}: mode {values['mode']!r} is not one of {', '.join(MODES)}.")
        row = Row(file=values["file"], source=values["source"], targets=targets, blend=values.get("blend", ""),
                  reweight=values.get("reweight", ""), mode=mode, line=line)
        if row.photo_id in seen:
            raise UsageError(f"{where}: {row.file!r} names the same photo as line {seen[row.photo_id]} "
                             f"(result folder {row.photo_id!r}).")
        seen[row.photo_id] = line
        rows.append(row)
    if not rows:
        raise UsageError(f"--captions {path}: no rows; {fmt}")
    return rows


# ----------------------------------------------------------------------------------------------------------------
# One photo's prompt
# ----------------------------------------------------------------------------------------------------------------
def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _of_type(prompt: Mapping, class_type: str) -> list:
    return sorted((nid for nid, n in prompt.items() if n["class_type"] == class_type), key=lambda s: (len(s), s))


def _title(prompt: Mapping, nid: str) -> str:
    node = prompt[nid]
    return f"node {nid} {(node.get('_meta') or {}).get('title') or node['class_type']!r} ({node['class_type']})"


def _set_text(prompt: dict, definitions: Mapping, nid: str, name: str, value: str, what: str) -> None:
    """Set a text input, following a link to the node that holds the text (a primitive with one text widget)."""
    seen = set()
    while _is_link(prompt[nid]["inputs"].get(name)):
        src = prompt[nid]["inputs"][name][0]
        if src in seen or src not in prompt:
            raise UsageError(f"batch: cannot set the {what}: the links from {_title(prompt, nid)} loop or break.")
        seen.add(src)
        texts = [s.name for s in node_inputs(definitions.get(prompt[src]["class_type"]) or {})
                 if s.type == "STRING" and (s.is_widget or s.name in prompt[src]["inputs"])]
        if len(texts) != 1:
            raise UsageError(f"batch: cannot set the {what}: input {name!r} of {_title(prompt, nid)} comes from "
                             f"{_title(prompt, src)}, which holds no single text value. Type the text into "
                             f"{_title(prompt, nid)} or feed it from a text primitive.")
        nid, name = src, texts[0]
    prompt[nid]["inputs"][name] = value


def _new_id(prompt: Mapping) -> str:
    numbers = [int(k) for k in prompt if str(k).isdigit()]
    return str(max(numbers, default=0) + 1)


@dataclass
class PhotoPrompt:
    prompt: dict
    psnr_node: Optional[str]  # the Reconstruction Check whose ui holds the PSNR
    subfolder: str  # where this attempt's Save Image files go (relative to the output folder)


def prepare_photo_prompt(base: Mapping, definitions: Mapping, row: Row, attempt_dir: str) -> PhotoPrompt:
    """The prompt of one photo: ``base`` (converted, with --image/--checkpoint/--set applied) with the row's captions
    and edits, every Save Image writing under ``attempt_dir/``, a Save Inversion and a Reconstruction Check. Pure."""
    prompt = json.loads(json.dumps(base))
    controllers = _of_type(prompt, "NTP_AttentionController")
    edits = _of_type(prompt, "NTP_EditedSample")
    inverts = _of_type(prompt, "NTP_DDIMInvert")
    if len(controllers) != 1 or not edits or len(inverts) != 1:
        raise UsageError(f"batch: the workflow needs one DDIM Invert, one Attention Controller and an Edited Sample "
                         f"(it has {len(inverts)}, {len(controllers)} and {len(edits)}): use a workflow like "
                         "example_workflows/word_swap.json.")
    ctrl, edit, invert = controllers[0], edits[0], inverts[0]
    # captions and edits
    _set_text(prompt, definitions, ctrl, "source_prompt", row.source, "source caption")
    source_link = prompt[invert]["inputs"].get("source")
    if _is_link(source_link) and "text" in prompt.get(source_link[0], {}).get("inputs", {}):
        _set_text(prompt, definitions, source_link[0], "text", row.source, "source caption")
    else:
        raise UsageError(f"batch: cannot set the source caption: DDIM Invert's 'source' does not come from a text "
                         f"encoder with a 'text' input (CLIP Text Encode).")
    c = prompt[ctrl]["inputs"]
    for name, value in (("target_prompts", "\n".join(row.targets)), ("blend_words", row.blend),
                        ("reweight", row.reweight)):
        _set_text(prompt, definitions, ctrl, name, value, name)
    if row.mode:
        c["mode"] = row.mode
    # every Save Image under this attempt's folder
    for nid in _of_type(prompt, "SaveImage"):
        prefix = str(prompt[nid]["inputs"].get("filename_prefix") or "ComfyUI")
        if _is_link(prefix):
            raise UsageError(f"batch: {_title(prompt, nid)}: its filename_prefix is a link; type it in.")
        prompt[nid]["inputs"]["filename_prefix"] = f"{attempt_dir}/{prefix.replace(chr(92), '/').rsplit('/', 1)[-1]}"
    # the inversion is saved
    saves = _of_type(prompt, "NTP_SaveInversion")
    if not saves:
        e = prompt[edit]["inputs"]
        sid = _new_id(prompt)
        prompt[sid] = {"class_type": "NTP_SaveInversion", "_meta": {"title": "Save Inversion (batch)"},
                       "inputs": {"model": e["model"], "inversion": e["inversion"],
                                  "null_embeddings": e["null_embeddings"]}}
        saves = [sid]
    for sid in saves:
        prompt[sid]["inputs"]["filename_prefix"] = row.photo_id
        prompt[sid]["inputs"]["source_prompt"] = row.source
    # the PSNR of the reconstruction
    checks = _of_type(prompt, "NTP_ReconstructionCheck")
    psnr_node = checks[0] if checks else None
    if psnr_node is None:
        decodes = [nid for nid in _of_type(prompt, "VAEDecode") if prompt[nid]["inputs"].get("samples") == [edit, 0]]
        latent = prompt[invert]["inputs"].get("latent")
        pixels = None
        if _is_link(latent) and latent[0] in prompt:
            pixels = prompt[latent[0]]["inputs"].get("pixels")
        if decodes and _is_link(pixels):
            psnr_node = _new_id(prompt)
            prompt[psnr_node] = {"class_type": "NTP_ReconstructionCheck",
                                 "_meta": {"title": "Reconstruction Check (batch)"},
                                 "inputs": {"source": pixels, "reconstruction": [decodes[0], 0]}}
    return PhotoPrompt(prompt=prompt, psnr_node=psnr_node, subfolder=attempt_dir)


def output_items(ui_outputs: Mapping) -> list:
    """The files a run wrote to the output folder ({filename, subfolder, type}), from its ui outputs."""
    items = []
    for output in (ui_outputs or {}).values():
        if not isinstance(output, Mapping):
            continue
        for values in output.values():
            if not isinstance(values, list):
                continue
            for item in values:
                if isinstance(item, Mapping) and "filename" in item and item.get("type", "output") == "output":
                    items.append({"filename": str(item["filename"]), "subfolder": str(item.get("subfolder") or ""),
                                  "type": "output"})
    return items


def metrics(ui_outputs: Mapping, psnr_node: Optional[str]) -> tuple:
    out = (ui_outputs or {}).get(psnr_node) if psnr_node is not None else None
    if not isinstance(out, Mapping):
        return None, None
    p, s = out.get("psnr") or [None], out.get("ssim") or [None]
    return (float(p[0]) if p[0] is not None else None), (float(s[0]) if s[0] is not None else None)


# ----------------------------------------------------------------------------------------------------------------
# Results on disk
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    row: Row
    status: str  # done | skipped | error | not run
    seconds: Optional[float] = None
    psnr: Optional[float] = None
    ssim: Optional[float] = None
    server: str = ""
    attempts: int = 0
    outputs: list = field(default_factory=list)
    error: str = ""

    def csv_row(self) -> dict:
        def num(v, fmt):
            return "" if v is None else format(v, fmt)

        return {"file": self.row.file, "status": self.status, "seconds": num(self.seconds, ".1f"),
                "psnr": num(self.psnr, ".2f"), "ssim": num(self.ssim, ".4f"), "server": self.server,
                "attempts": str(self.attempts) if self.attempts else "", "outputs": "; ".join(self.outputs),
                "error": self.error}


class BatchOutput:
    """The output folder: finished photos in ``<photo id>/`` (complete or absent), attempts in ``.staging/``."""

    def __init__(self, root: str):
        self.root = Path(root).expanduser().resolve()
        self.staging = self.root / STAGING
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Create the folders and remove what an interrupted run left in ``.staging``."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir()

    def result_dir(self, row: Row) -> Path:
        return self.root / row.photo_id

    def finished(self, row: Row) -> Optional[dict]:
        """The saved result of a photo finished by an earlier run, or None."""
        path = self.result_dir(row) / RESULT_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def new_attempt(self, row: Row) -> tuple:
        """(name relative to the staging folder, path) of a fresh attempt folder for ``row``."""
        name = f"{row.photo_id}-{uuid.uuid4().hex[:8]}"
        path = self.staging / name
        path.mkdir(parents=True)
        return name, path

    def finish(self, row: Row, attempt: Path, result: dict) -> list:
        """Write result.json into the attempt folder and rename it to ``<photo id>/`` (replacing an earlier result
        with --redo). Returns the output files relative to the output folder."""
        outputs = sorted(str(p.relative_to(attempt)).replace(os.sep, "/") for p in attempt.rglob("*") if p.is_file())
        final = self.result_dir(row)
        result = dict(result, outputs=[f"{final.name}/{o}" for o in outputs])
        tmp = attempt / (RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, attempt / RESULT_FILE)
        with self._lock:
            old = None
            if final.exists():
                old = self.staging / f"old-{final.name}-{uuid.uuid4().hex[:8]}"
                os.replace(final, old)
            os.replace(attempt, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return result["outputs"]

    def close(self) -> None:
        """After a batch that was not interrupted: nothing is in progress, remove the staging folder."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def discard(self, attempt: Optional[Path]) -> None:
        if attempt is not None:
            shutil.rmtree(attempt, ignore_errors=True)

    def write_summary(self, outcomes: Iterable[Outcome]) -> Path:
        path = self.root / SUMMARY_FILE
        tmp = self.root / f".{SUMMARY_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
            writer.writeheader()
            for outcome in outcomes:
                writer.writerow(outcome.csv_row())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path


def _move_into(attempt: Path, rel: str, src: Path) -> None:
    dest = attempt / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dest))


def _write_into(attempt: Path, rel: str, data: bytes) -> None:
    dest = attempt / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def local_name(item: Mapping, subfolder: str) -> str:
    """Where an output file goes inside the photo's folder: Save Image files without the attempt folder,
    everything else (the inversion) under its own subfolder."""
    sub = item.get("subfolder", "").replace("\\", "/").strip("/")
    if sub == subfolder or sub.startswith(subfolder + "/"):
        sub = sub[len(subfolder):].strip("/")
    return f"{sub}/{item['filename']}" if sub else item["filename"]


# ----------------------------------------------------------------------------------------------------------------
# Progress and the table
# ----------------------------------------------------------------------------------------------------------------
class Progress:
    """A tqdm bar over the photos to run (with its ETA), or plain lines where tqdm is missing; ``quiet`` prints
    nothing."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.bar = None
        self.total, self.count = 0, 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def start(self, total: int) -> "Progress":
        self.total, self.count, self.started = total, 0, time.monotonic()
        if not self.quiet and total:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="photo", file=self.stream, dynamic_ncols=True)
            except ImportError:  # pragma: no cover - tqdm ships with ComfyUI
                self.bar = None
        return self

    def note(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            if self.bar is not None:
                self.bar.write(text, file=self.stream)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def advance(self, text: str) -> None:
        with self._lock:
            self.count += 1
        if self.quiet:
            return
        if self.bar is not None:
            with self._lock:
                self.bar.write(text, file=self.stream)
                self.bar.update(1)
        else:
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.count * (self.total - self.count) if self.count else 0
            self.note(f"[{self.count}/{self.total}, ETA {eta:.0f} s] {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe(outcome: Outcome) -> str:
    if outcome.status in ("done", "skipped"):
        psnr = f", PSNR {outcome.psnr:.2f} dB" if outcome.psnr is not None else ""
        where = f" on {outcome.server}" if outcome.server and outcome.server != IN_PROCESS else ""
        took = f" in {outcome.seconds:.1f} s" if outcome.seconds is not None else ""
        return f"{outcome.row.file}: {outcome.status}{took}{psnr}{where}"
    return f"{outcome.row.file}: {outcome.status}: {outcome.error}"


def format_table(outcomes: list) -> str:
    rows = [("file", "status", "seconds", "PSNR dB", "outputs / error")]
    for o in outcomes:
        d = o.csv_row()
        rows.append((d["file"], d["status"], d["seconds"], d["psnr"],
                     d["error"] if o.status in ("error", "not run") else f"{len(o.outputs)} files"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _skipped(row: Row, result: dict) -> Outcome:
    return Outcome(row=row, status="skipped", seconds=result.get("seconds"), psnr=result.get("psnr"),
                   ssim=result.get("ssim"), server=result.get("server", ""), attempts=result.get("attempts", 0),
                   outputs=list(result.get("outputs") or []))


def _plan(rows: list, folder: Path, out: BatchOutput, redo: bool) -> tuple:
    """(outcomes in row order with the skipped and missing photos filled in, rows to run)."""
    outcomes, todo = {}, []
    for row in rows:
        image = folder / row.file
        if not image.is_file():
            outcomes[row.photo_id] = Outcome(row=row, status="error", error=f"no such file {image}")
            continue
        result = None if redo else out.finished(row)
        if result is not None:
            outcomes[row.photo_id] = _skipped(row, result)
        else:
            todo.append(row)
    return outcomes, todo


def _result(row: Row, seconds: float, psnr, ssim, server: str, attempts: int) -> dict:
    return {"file": row.file, "row": row.as_dict(), "seconds": round(seconds, 3), "psnr": psnr, "ssim": ssim,
            "server": server, "attempts": attempts, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


@dataclass
class BatchResult:
    outcomes: list
    summary: Path
    interrupted: bool = False

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if o.status in ("error", "not run")]


def _ordered(rows: list, outcomes: dict) -> list:
    return [outcomes.get(r.photo_id) or Outcome(row=r, status="not run", error="interrupted before it ran")
            for r in rows]


# ----------------------------------------------------------------------------------------------------------------
# In-process
# ----------------------------------------------------------------------------------------------------------------
def _wrap_up(progress: "Progress", rows: list, outcomes: dict, out: "BatchOutput") -> tuple:
    """End a batch, also when it was interrupted or failed: close the progress line and write the summary of what
    ran. Returns (the outcomes in the captions' order, the summary's path)."""
    progress.close()
    ordered = _ordered(rows, outcomes)
    return ordered, out.write_summary(ordered)


async def batch_in_process(folder: str, workflow_path: str, captions: str, output_dir: Optional[str] = None,
                           checkpoint: Optional[str] = None, sets: Iterable[str] = (), comfyui: Optional[str] = None,
                           input_dir: Optional[str] = None, cpu: bool = False, redo: bool = False,
                           mask: Optional[str] = None, progress: Optional[Progress] = None, log=None,
                           verbose: bool = False) -> BatchResult:
    """Run the workflow for every photo in this process, one after the other (one executor: unchanged nodes such
    as the checkpoint loader stay cached)."""
    from .app import build_prompt, check_files, prepare_in_process
    from .host import Reporter, directories, execute_prompt, import_image, register_checkpoint

    sets = list(sets)
    check_files(None, mask)
    folder_p, rows, workflow, out = _start(folder, workflow_path, captions, output_dir)
    outcomes, todo = _plan(rows, folder_p, out, redo)
    host, definitions = await prepare_in_process(comfyui, cpu, log)
    progress = (progress or Progress()).start(len(todo))
    for o in outcomes.values():
        if o.status == "skipped":
            progress.note(describe(o) + " (finished by an earlier run)")
    executor, interrupted = None, False
    try:
        with directories(host, str(out.staging), input_dir):
            mask_name = import_image(host, mask, "--mask") if mask is not None else None
            ckpt_name = register_checkpoint(host, checkpoint) if checkpoint is not None else None
            check_workflow(workflow, definitions, ckpt_name, sets, mask_name, rows[0])
            for row in todo:
                host.model_management.throw_exception_if_processing_interrupted()  # Cancel between photos
                attempt_name, attempt = out.new_attempt(row)
                started = time.perf_counter()
                try:
                    image_name = import_image(host, str(folder_p / row.file))
                    base = build_prompt(workflow, definitions, image_name, ckpt_name, sets, mask_name)
                    photo = prepare_photo_prompt(base, definitions, row, attempt_name)
                    result = await execute_prompt(host, photo.prompt, None, Reporter(photo.prompt, quiet=True),
                                                  verbose=verbose, executor=executor)
                    executor = result.executor
                    for item in output_items(result.ui_outputs):
                        src = out.staging / item["subfolder"] / item["filename"]
                        if src.is_file() and not str(item["subfolder"]).startswith(attempt_name):
                            _move_into(attempt, local_name(item, attempt_name), src)
                    psnr, ssim = metrics(result.ui_outputs, photo.psnr_node)
                    seconds = time.perf_counter() - started
                    files = out.finish(row, attempt, _result(row, seconds, psnr, ssim, IN_PROCESS, 1))
                    outcome = Outcome(row, "done", seconds, psnr, ssim, IN_PROCESS, 1, files)
                except RunnerError as e:
                    out.discard(attempt)
                    outcome = Outcome(row, "error", time.perf_counter() - started, server=IN_PROCESS, attempts=1,
                                      error=str(e).replace("\n", " "))
                except BaseException:
                    out.discard(attempt)
                    raise
                outcomes[row.photo_id] = outcome
                progress.advance(describe(outcome))
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:  # noqa: BLE001 - Cancel (the host's interrupt) and anything unforeseen: summary first
        if type(e).__name__ != "InterruptProcessingException":
            raise
        interrupted = True
    finally:
        ordered, summary = _wrap_up(progress, rows, outcomes, out)
    if not interrupted:
        out.close()
    return BatchResult(ordered, summary, interrupted)


def check_workflow(workflow: Mapping, definitions: Mapping, checkpoint: Optional[str], sets: list,
                   mask_name: Optional[str], row: Row) -> None:
    """Fail once, before any photo runs, when the workflow or the overrides do not fit the batch."""
    from .app import build_prompt

    prepare_photo_prompt(build_prompt(workflow, definitions, None, checkpoint, sets, mask_name), definitions, row,
                         "check")


def _start(folder: str, workflow_path: str, captions: str, output_dir: Optional[str]):
    from .app import load_workflow

    folder_p = Path(folder).expanduser().resolve()
    if not folder_p.is_dir():
        raise UsageError(f"batch {folder}: no such folder.")
    rows = read_captions(captions)
    workflow = load_workflow(workflow_path)
    out = BatchOutput(output_dir or str(folder_p / DEFAULT_OUTPUT))
    out.prepare()
    return folder_p, rows, workflow, out


# ----------------------------------------------------------------------------------------------------------------
# Several servers (--url ...)
# ----------------------------------------------------------------------------------------------------------------
class ServerGone(Exception):
    """The server stopped answering while it had a photo (the photo goes back to the queue)."""


def batch_remote(urls: list, folder: str, workflow_path: str, captions: str, output_dir: Optional[str] = None,
                 checkpoint: Optional[str] = None, sets: Iterable[str] = (), redo: bool = False,
                 mask: Optional[str] = None, timeout: Optional[float] = None, progress: Optional[Progress] = None,
                 on_event: Optional[Callable[[str, str, Row], None]] = None, poll: float = 0.5) -> BatchResult:
    """Spread the photos over running ComfyUI servers: one worker thread per server takes one photo at a time from
    a shared queue. A photo whose server fails goes back to the queue (at most once per server); that server takes
    no more photos. ``on_event(event, url, row)`` ("queued", "done", "failed", "server-lost") is for tests."""
    from . import remote
    from .app import build_prompt, check_files

    sets = list(sets)
    check_files(None, mask)
    bases = []
    for url in urls:
        base = url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise UsageError(f"--url {url}: expected http://HOST:PORT.")
        if base in bases:
            raise UsageError(f"--url {url} is given twice.")
        bases.append(base)
    folder_p, rows, workflow, out = _start(folder, workflow_path, captions, output_dir)
    outcomes, todo = _plan(rows, folder_p, out, redo)
    progress = (progress or Progress()).start(len(todo))
    for o in outcomes.values():
        if o.status == "skipped":
            progress.note(describe(o) + " (finished by an earlier run)")
    fatal: list = []  # a workflow/override problem found on a server: stops the batch (UsageError in the caller)
    work: "queue.Queue" = queue.Queue()
    for row in todo:
        work.put((row, 0, []))  # row, attempts so far, servers that failed it
    pending = {"n": len(todo)}
    lock = threading.Lock()
    stop = threading.Event()
    alive = set(bases)
    in_flight: dict = {}
    silent = io.StringIO()

    def emit(event: str, base: str, row: Row) -> None:
        if on_event is not None:
            on_event(event, base, row)

    def settle(row: Row, outcome: Outcome) -> None:
        with lock:
            outcomes[row.photo_id] = outcome
            pending["n"] -= 1
        progress.advance(describe(outcome))

    def run_one(base: str, definitions: Mapping, state: dict, row: Row, attempts: int) -> Outcome:
        attempt_name, attempt = out.new_attempt(row)
        started = time.perf_counter()
        prompt_id = None
        try:
            try:
                image_name = remote.upload_image(base, str(folder_p / row.file))
                if mask is not None and "mask_name" not in state:
                    state["mask_name"] = remote.upload_image(base, mask, "--mask")
                base_prompt = build_prompt(workflow, definitions, image_name, checkpoint, sets,
                                           state.get("mask_name"))
                photo = prepare_photo_prompt(base_prompt, definitions, row, attempt_name)
                prompt_id = remote.queue_prompt(base, photo.prompt, None, state["client_id"])
                with lock:
                    in_flight[base] = prompt_id
                emit("queued", base, row)
                entry = remote.wait_for_history(base, prompt_id, timeout, poll=poll, stream=silent)
                status = entry.get("status") or {}
                if status.get("status_str") == "error":
                    for event, data in status.get("messages") or []:
                        if event == "execution_error":
                            raise ExecutionError(remote.format_execution_error(data, photo.prompt))
                        if event == "execution_interrupted":
                            raise ServerGone(f"the prompt was interrupted on {base}")
                    raise ExecutionError(f"prompt {prompt_id} failed on {base}.")
                ui = entry.get("outputs") or {}
                for item in output_items(ui):
                    status_code, body = remote.fetch(base, item)
                    if status_code != 200:
                        raise ServerGone(f"downloading {item['filename']} from {base} failed ({status_code})")
                    _write_into(attempt, local_name(item, attempt_name), body)
                psnr, ssim = metrics(ui, photo.psnr_node)
                seconds = time.perf_counter() - started
                files = out.finish(row, attempt, _result(row, seconds, psnr, ssim, base, attempts + 1))
                return Outcome(row, "done", seconds, psnr, ssim, base, attempts + 1, files)
            finally:
                with lock:
                    in_flight.pop(base, None)
        except (remote.ServerError, ServerGone) as e:
            out.discard(attempt)
            if prompt_id is not None:  # a server that stopped answering in time may still be running it
                remote.cancel_prompt(base, prompt_id)
            raise ServerGone(str(e)) from None
        except BaseException:
            out.discard(attempt)
            raise

    def worker(base: str) -> None:
        state = {"client_id": uuid.uuid4().hex}
        try:
            definitions = remote.fetch_object_info(base)
        except RunnerError as e:
            lose(base, f"not usable: {e}")
            return
        try:
            check_workflow(workflow, definitions, checkpoint, sets, "mask.png" if mask else None, rows[0])
        except RunnerError as e:
            with lock:
                fatal.append(f"{base}: {e}")
            stop.set()
            return
        while not stop.is_set():
            with lock:
                if pending["n"] <= 0:
                    return
            try:
                row, attempts, failed_on = work.get(timeout=0.2)
            except queue.Empty:
                continue
            if base in failed_on:  # this server failed it before: leave it to another one
                work.put((row, attempts, failed_on))
                with lock:
                    others = alive - set(failed_on)
                if not others:
                    give_up(row, attempts, "every server that is left failed it")
                time.sleep(0.2)
                continue
            try:
                outcome = run_one(base, definitions, state, row, attempts)
            except ServerGone as e:
                failed_on = failed_on + [base]
                emit("server-lost", base, row)
                progress.note(f"{row.file}: {base} failed ({e}); the photo goes back to the queue")
                work.put((row, attempts + 1, failed_on))
                lose(base, str(e))
                return
            except RunnerError as e:  # the photo itself failed (validation, a node error): no retry
                outcome = Outcome(row, "error", None, server=base, attempts=attempts + 1,
                                  error=str(e).replace("\n", " "))
                emit("failed", base, row)
            except Exception as e:  # noqa: BLE001 - a bug: record it, keep the batch going
                outcome = Outcome(row, "error", None, server=base, attempts=attempts + 1,
                                  error=f"{type(e).__name__}: {e}")
                emit("failed", base, row)
            else:
                emit("done", base, row)
            settle(row, outcome)

    def lose(base: str, why: str) -> None:
        with lock:
            alive.discard(base)
            left = set(alive)
        progress.note(f"server {base} dropped: {why}")
        if not left:  # nobody left: what is still queued cannot run
            drain("no server is left (every --url failed)")

    def give_up(row: Row, attempts: int, why: str) -> None:
        # remove this row from the queue (it was put back) and record the error
        kept = []
        while True:
            try:
                item = work.get_nowait()
            except queue.Empty:
                break
            if item[0] is not row:
                kept.append(item)
        for item in kept:
            work.put(item)
        settle(row, Outcome(row, "error", None, attempts=attempts, error=why))

    def drain(why: str) -> None:
        while True:
            try:
                row, attempts, failed_on = work.get_nowait()
            except queue.Empty:
                return
            settle(row, Outcome(row, "error", None, attempts=attempts, error=why))

    threads = [threading.Thread(target=worker, args=(b,), name=f"batch {b}", daemon=True) for b in bases]
    interrupted = False
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
        if not fatal:
            drain("no server is left (every --url failed)")
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        with lock:
            running = dict(in_flight)
        for base, prompt_id in running.items():  # do not leave our prompts running on the servers
            remote.cancel_prompt(base, prompt_id)
    finally:
        ordered, summary = _wrap_up(progress, rows, outcomes, out)
    if not interrupted:
        out.close()
    if fatal:
        raise UsageError("batch: " + fatal[0])
    return BatchResult(ordered, summary, interrupted)
