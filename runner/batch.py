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

Modules: ``captions`` (the CSV), ``photo_prompt`` (one photo's prompt), ``staging`` (the output folder: attempts in
``.staging``, landing the outputs, the rename), ``progress`` (the progress line), ``summary`` (outcomes,
summary.csv, the table), ``scheduler`` (``--url``: the servers and the work queue) and this one (what both modes do
first and last, and the in-process loop).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from .captions import Row, read_captions
from .errors import RunnerError, UsageError
from .photo_prompt import check_workflow, metrics, prepare_photo_prompt
from .progress import Progress
from .staging import BatchOutput, local_name, move_into, output_items, result_record
from .summary import IN_PROCESS, BatchResult, Outcome, describe, ordered, skipped, write_summary

DEFAULT_OUTPUT = "nulltext_p2p_batch"  # inside FOLDER


# ----------------------------------------------------------------------------------------------------------------
# What both modes share
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """One batch as both modes run it: the photos, the workflow and overrides, the output folder, the outcomes so
    far (photo id -> Outcome: the photos finished by an earlier run or missing at the start, then each photo run)
    and the rows still to run."""

    folder: Path
    rows: list
    workflow: dict
    sets: list
    mask: Optional[str]
    out: BatchOutput
    outcomes: dict
    todo: list
    servers: list  # --url, checked (empty in-process)
    progress: Optional[Progress] = None

    def start(self, progress: Optional[Progress]) -> None:
        """Start the progress line over the photos to run and list the ones an earlier run finished."""
        self.progress = (progress or Progress()).start(len(self.todo))
        for o in self.outcomes.values():
            if o.status == "skipped":
                self.progress.note(describe(o) + " (finished by an earlier run)")

    def wrap_up(self, interrupted: bool) -> BatchResult:
        """End the batch, also when it was interrupted or failed: close the progress line and write the summary of
        what ran (the outcomes in the captions' order)."""
        self.progress.close()
        outcomes = ordered(self.rows, self.outcomes)
        return BatchResult(outcomes, write_summary(self.out.root, outcomes), interrupted)


def open_batch(folder: str, workflow_path: str, captions: str, output_dir: Optional[str], sets: Iterable[str],
               redo: bool, mask: Optional[str], urls: Iterable[str] = ()) -> Batch:
    """What both modes do first, in this order: check --mask and every --url, the folder, the captions file and the
    workflow; prepare the output folder (what an interrupted run left in .staging goes); find the photos finished
    by an earlier run (unless ``redo``) and those missing from the folder."""
    from .app import check_files, load_workflow

    check_files(None, mask)
    servers = server_urls(urls)
    folder_p = Path(folder).expanduser().resolve()
    if not folder_p.is_dir():
        raise UsageError(f"batch {folder}: no such folder.")
    rows = read_captions(captions)
    workflow = load_workflow(workflow_path)
    out = BatchOutput(output_dir or str(folder_p / DEFAULT_OUTPUT))
    out.prepare()
    outcomes, todo = {}, []
    for row in rows:
        image = folder_p / row.file
        if not image.is_file():
            outcomes[row.photo_id] = Outcome(row=row, status="error", error=f"no such file {image}")
            continue
        result = None if redo else out.finished(row)
        if result is not None:
            outcomes[row.photo_id] = skipped(row, result)
        else:
            todo.append(row)
    return Batch(folder_p, rows, workflow, list(sets), mask, out, outcomes, todo, servers)


def server_urls(urls: Iterable[str]) -> list:
    """--url values without the trailing slash; UsageError for one that is not http(s) or is given twice."""
    bases = []
    for url in urls:
        base = url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise UsageError(f"--url {url}: expected http://HOST:PORT.")
        if base in bases:
            raise UsageError(f"--url {url} is given twice.")
        bases.append(base)
    return bases


# ----------------------------------------------------------------------------------------------------------------
# In-process
# ----------------------------------------------------------------------------------------------------------------
async def batch_in_process(folder: str, workflow_path: str, captions: str, output_dir: Optional[str] = None,
                           checkpoint: Optional[str] = None, sets: Iterable[str] = (), comfyui: Optional[str] = None,
                           input_dir: Optional[str] = None, cpu: bool = False, redo: bool = False,
                           mask: Optional[str] = None, progress: Optional[Progress] = None, log=None,
                           verbose: bool = False) -> BatchResult:
    """Run the workflow for every photo in this process, one after the other (one executor: unchanged nodes such
    as the checkpoint loader stay cached)."""
    from .app import prepare_in_process
    from .comfy_host import directories, import_image, register_checkpoint

    batch = open_batch(folder, workflow_path, captions, output_dir, sets, redo, mask)
    host, definitions = await prepare_in_process(comfyui, cpu, log)
    batch.start(progress)
    executor, interrupted = None, False
    try:
        with directories(host, str(batch.out.staging), input_dir):
            mask_name = import_image(host, mask, "--mask") if mask is not None else None
            ckpt_name = register_checkpoint(host, checkpoint) if checkpoint is not None else None
            check_workflow(batch.workflow, definitions, ckpt_name, batch.sets, mask_name, batch.rows[0])
            for row in batch.todo:
                host.model_management.throw_exception_if_processing_interrupted()  # Cancel between photos
                outcome, executor = await _run_photo(batch, host, definitions, row, ckpt_name, mask_name, executor,
                                                     verbose)
                batch.outcomes[row.photo_id] = outcome
                batch.progress.advance(describe(outcome))
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:  # noqa: BLE001 - Cancel (the host's interrupt) and anything unforeseen: summary first
        if type(e).__name__ != "InterruptProcessingException":
            raise
        interrupted = True
    finally:
        result = batch.wrap_up(interrupted)
    if not interrupted:
        batch.out.close()
    return result


async def _run_photo(batch: Batch, host, definitions, row: Row, ckpt_name: Optional[str],
                     mask_name: Optional[str], executor, verbose: bool) -> tuple:
    """(outcome, executor) of one photo run in this process, in a fresh attempt folder that becomes the photo's
    folder; a RunnerError is the photo's error, anything else (Ctrl-C, Cancel) propagates."""
    from .app import build_prompt
    from .comfy_host import Reporter, execute_prompt, import_image

    out = batch.out
    attempt_name, attempt = out.new_attempt(row)
    started = time.perf_counter()
    try:
        image_name = import_image(host, str(batch.folder / row.file))
        base = build_prompt(batch.workflow, definitions, image_name, ckpt_name, batch.sets, mask_name)
        photo = prepare_photo_prompt(base, definitions, row, attempt_name)
        result = await execute_prompt(host, photo.prompt, None, Reporter(photo.prompt, quiet=True),
                                      verbose=verbose, executor=executor)
        executor = result.executor
        for item in output_items(result.ui_outputs):
            src = out.staging / item["subfolder"] / item["filename"]
            if src.is_file() and not str(item["subfolder"]).startswith(attempt_name):
                move_into(attempt, local_name(item, attempt_name), src)
        psnr, ssim = metrics(result.ui_outputs, photo.psnr_node)
        seconds = time.perf_counter() - started
        files = out.finish(row, attempt, result_record(row, seconds, psnr, ssim, IN_PROCESS, 1))
        return Outcome(row, "done", seconds, psnr, ssim, IN_PROCESS, 1, files), executor
    except RunnerError as e:
        out.discard(attempt)
        return Outcome(row, "error", time.perf_counter() - started, server=IN_PROCESS, attempts=1,
                       error=str(e).replace("\n", " ")), executor
    except BaseException:
        out.discard(attempt)
        raise


# ----------------------------------------------------------------------------------------------------------------
# Several servers (--url ...)
# ----------------------------------------------------------------------------------------------------------------
def batch_remote(urls: list, folder: str, workflow_path: str, captions: str, output_dir: Optional[str] = None,
                 checkpoint: Optional[str] = None, sets: Iterable[str] = (), redo: bool = False,
                 mask: Optional[str] = None, timeout: Optional[float] = None, progress: Optional[Progress] = None,
                 on_event: Optional[Callable[[str, str, Row], None]] = None, poll: float = 0.5) -> BatchResult:
    """Spread the photos over running ComfyUI servers (runner/scheduler.py): one worker thread per server takes one
    photo at a time from a shared queue. A photo whose server fails goes back to the queue (at most once per
    server); that server takes no more photos. ``on_event(event, url, row)`` ("queued", "done", "failed",
    "server-lost") is for tests."""
    from .scheduler import Scheduler

    batch = open_batch(folder, workflow_path, captions, output_dir, sets, redo, mask, urls)
    batch.start(progress)
    scheduler = Scheduler(batch, batch.servers, checkpoint, timeout, poll, on_event)
    interrupted = False
    try:
        interrupted = scheduler.run()
    finally:
        result = batch.wrap_up(interrupted)
    if not interrupted:
        batch.out.close()
    fatal = scheduler.first_fatal()
    if fatal is not None:
        raise UsageError("batch: " + fatal)
    return result
