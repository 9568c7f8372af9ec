"""``batch --url``: the photos spread over running ComfyUI servers through their HTTP API (runner/remote.py).

One worker thread per server takes one photo at a time from a shared work queue. A photo whose server fails (stops
answering, does not answer in time, loses a download) goes back to the queue for another server (at most once per
server), and that server takes no more photos; when no server is left, what is still queued is recorded as an
error. A workflow that does not fit a server's nodes stops the whole batch.
"""

from __future__ import annotations

import io
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Optional

from . import remote
from .app import build_prompt
from .captions import Row
from .errors import ExecutionError, RunnerError
from .photo_prompt import PhotoPrompt, check_workflow, metrics, prepare_photo_prompt
from .staging import local_name, output_items, result_record, write_into
from .summary import Outcome, describe

if TYPE_CHECKING:
    from .batch import Batch

NO_SERVER_LEFT = "no server is left (every --url failed)"


class ServerGone(Exception):
    """The server stopped answering while it had a photo (the photo goes back to the queue)."""


@dataclass(frozen=True)
class Job:
    """A photo in the work queue: its row, the attempts so far and the servers that failed it."""

    row: Row
    attempts: int = 0
    failed_on: tuple = ()


@dataclass
class Session:
    """A worker's own connection to its server (used by that worker's thread only)."""

    base: str
    definitions: Mapping  # the server's GET /object_info
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    mask_name: Optional[str] = None  # --mask, uploaded once per server


class Scheduler:
    """The photos of ``batch.todo`` over the servers ``servers`` (http://HOST:PORT, no trailing slash).

    Set once: ``batch`` (the folder, rows, workflow, overrides, output folder and progress), ``servers``,
    ``checkpoint``, ``timeout`` (per photo), ``poll`` (seconds between history requests), ``on_event``
    (``on_event(event, url, row)``: "queued", "done", "failed", "server-lost"; for tests), ``work`` (the queue of
    Jobs, thread-safe itself), ``stop`` (set on Ctrl-C or a fatal error: the workers take no more photos).

    ``lock`` guards the fields the workers change: ``pending`` (photos not settled yet: a worker stops at 0),
    ``alive`` (servers still taking photos), ``in_flight`` (server -> the id of our prompt running there, cancelled
    on Ctrl-C), ``fatal`` (workflow problems found on a server) and ``batch.outcomes`` (photo id -> Outcome).
    """

    def __init__(self, batch: "Batch", servers: list, checkpoint: Optional[str] = None,
                 timeout: Optional[float] = None, poll: float = 0.5,
                 on_event: Optional[Callable[[str, str, Row], None]] = None):
        self.batch = batch
        self.servers = list(servers)
        self.checkpoint = checkpoint
        self.timeout = timeout
        self.poll = poll
        self.on_event = on_event
        self.work: "queue.Queue[Job]" = queue.Queue()
        for row in batch.todo:
            self.work.put(Job(row))
        self.stop = threading.Event()
        self.silent = io.StringIO()  # where remote.wait_for_history's "waiting for the server" notes go
        self.lock = threading.Lock()
        self.pending = len(batch.todo)
        self.alive = set(self.servers)
        self.in_flight: dict = {}
        self.fatal: list = []

    # ------------------------------------------------------------------------------------------------------------
    # The main thread
    # ------------------------------------------------------------------------------------------------------------
    def run(self) -> bool:
        """Run every photo (one worker thread per server); True if Ctrl-C stopped it (then our prompts still on the
        servers are cancelled). ``first_fatal()`` says afterwards whether the workflow did not fit a server."""
        threads = [threading.Thread(target=self._worker, args=(b,), name=f"batch {b}", daemon=True)
                   for b in self.servers]
        try:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)
            if self.first_fatal() is None:
                self._drain(NO_SERVER_LEFT)
        except KeyboardInterrupt:
            self.stop.set()
            self._cancel_in_flight()
            return True
        return False

    def first_fatal(self) -> Optional[str]:
        with self.lock:
            return self.fatal[0] if self.fatal else None

    def _cancel_in_flight(self) -> None:
        with self.lock:
            running = dict(self.in_flight)
        for base, prompt_id in running.items():  # do not leave our prompts running on the servers
            remote.cancel_prompt(base, prompt_id)

    # ------------------------------------------------------------------------------------------------------------
    # A worker (one thread per server)
    # ------------------------------------------------------------------------------------------------------------
    def _worker(self, base: str) -> None:
        session = self._connect(base)
        if session is None:
            return
        while not self.stop.is_set():
            with self.lock:
                if self.pending <= 0:
                    return
            try:
                job = self.work.get(timeout=0.2)
            except queue.Empty:
                continue
            if base in job.failed_on:  # this server failed it before: leave it to another one
                self._pass_on(job)
                continue
            if not self._run(session, job):
                return

    def _connect(self, base: str) -> Optional[Session]:
        """The server's node definitions, checked against the workflow; None if the worker has to stop (the server
        is dropped, or the workflow does not fit: a fatal error that stops the batch)."""
        try:
            definitions = remote.fetch_object_info(base)
        except RunnerError as e:
            self._lose(base, f"not usable: {e}")
            return None
        b = self.batch
        try:
            check_workflow(b.workflow, definitions, self.checkpoint, b.sets, "mask.png" if b.mask else None,
                           b.rows[0])
        except RunnerError as e:
            with self.lock:
                self.fatal.append(f"{base}: {e}")
            self.stop.set()
            return None
        return Session(base, definitions)

    def _pass_on(self, job: Job) -> None:
        """Back to the queue for another server; recorded as an error when every server left has failed it."""
        self.work.put(job)
        with self.lock:
            others = self.alive - set(job.failed_on)
        if not others:
            self._give_up(job, "every server that is left failed it")
        time.sleep(0.2)

    def _run(self, session: Session, job: Job) -> bool:
        """Run one photo and settle it; False when the server failed (the photo went back to the queue and this
        server is dropped)."""
        base, row = session.base, job.row
        try:
            outcome = self._run_one(session, job)
        except ServerGone as e:
            self._emit("server-lost", base, row)
            self.batch.progress.note(f"{row.file}: {base} failed ({e}); the photo goes back to the queue")
            self.work.put(Job(row, job.attempts + 1, job.failed_on + (base,)))
            self._lose(base, str(e))
            return False
        except RunnerError as e:  # the photo itself failed (validation, a node error): no retry
            outcome = Outcome(row, "error", None, server=base, attempts=job.attempts + 1,
                              error=str(e).replace("\n", " "))
            self._emit("failed", base, row)
        except Exception as e:  # noqa: BLE001 - a bug: record it, keep the batch going
            outcome = Outcome(row, "error", None, server=base, attempts=job.attempts + 1,
                              error=f"{type(e).__name__}: {e}")
            self._emit("failed", base, row)
        else:
            self._emit("done", base, row)
        self._settle(row, outcome)
        return True

    def _run_one(self, session: Session, job: Job) -> Outcome:
        """One photo on the session's server, its outputs downloaded into a fresh attempt folder that becomes the
        photo's folder. ServerGone if the server fails (the attempt is discarded, our prompt cancelled there)."""
        out, base, row = self.batch.out, session.base, job.row
        attempt_name, attempt = out.new_attempt(row)
        started = time.perf_counter()
        prompt_id = None
        try:
            try:
                photo = self._photo_prompt(session, row, attempt_name)
                prompt_id = remote.queue_prompt(base, photo.prompt, None, session.client_id)
                with self.lock:
                    self.in_flight[base] = prompt_id
                self._emit("queued", base, row)
                ui = self._wait(base, prompt_id, photo.prompt)
                for item in output_items(ui):
                    status_code, body = remote.fetch(base, item)
                    if status_code != 200:
                        raise ServerGone(f"downloading {item['filename']} from {base} failed ({status_code})")
                    write_into(attempt, local_name(item, attempt_name), body)
                psnr, ssim = metrics(ui, photo.psnr_node)
                seconds = time.perf_counter() - started
                files = out.finish(row, attempt, result_record(row, seconds, psnr, ssim, base, job.attempts + 1))
                return Outcome(row, "done", seconds, psnr, ssim, base, job.attempts + 1, files)
            finally:
                with self.lock:
                    self.in_flight.pop(base, None)
        except (remote.ServerError, ServerGone) as e:
            out.discard(attempt)
            if prompt_id is not None:  # a server that stopped answering in time may still be running it
                remote.cancel_prompt(base, prompt_id)
            raise ServerGone(str(e)) from None
        except BaseException:
            out.discard(attempt)
            raise

    def _photo_prompt(self, session: Session, row: Row, attempt_name: str) -> PhotoPrompt:
        """Upload the photo (and the mask, once per server) and build its prompt with the server's definitions."""
        b, base = self.batch, session.base
        image_name = remote.upload_image(base, str(b.folder / row.file))
        if b.mask is not None and session.mask_name is None:
            session.mask_name = remote.upload_image(base, b.mask, "--mask")
        base_prompt = build_prompt(b.workflow, session.definitions, image_name, self.checkpoint, b.sets,
                                   session.mask_name)
        return prepare_photo_prompt(base_prompt, session.definitions, row, attempt_name)

    def _wait(self, base: str, prompt_id: str, prompt: dict) -> dict:
        """The ui outputs of our prompt once the server has run it; ExecutionError if a node failed, ServerGone if
        the prompt was interrupted there."""
        entry = remote.wait_for_history(base, prompt_id, self.timeout, poll=self.poll, stream=self.silent)
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            for event, data in status.get("messages") or []:
                if event == "execution_error":
                    raise ExecutionError(remote.format_execution_error(data, prompt))
                if event == "execution_interrupted":
                    raise ServerGone(f"the prompt was interrupted on {base}")
            raise ExecutionError(f"prompt {prompt_id} failed on {base}.")
        return entry.get("outputs") or {}

    # ------------------------------------------------------------------------------------------------------------
    # Shared state (any thread)
    # ------------------------------------------------------------------------------------------------------------
    def _emit(self, event: str, base: str, row: Row) -> None:
        if self.on_event is not None:
            self.on_event(event, base, row)

    def _settle(self, row: Row, outcome: Outcome) -> None:
        with self.lock:
            self.batch.outcomes[row.photo_id] = outcome
            self.pending -= 1
        self.batch.progress.advance(describe(outcome))

    def _lose(self, base: str, why: str) -> None:
        with self.lock:
            self.alive.discard(base)
            left = bool(self.alive)
        self.batch.progress.note(f"server {base} dropped: {why}")
        if not left:  # nobody left: what is still queued cannot run
            self._drain(NO_SERVER_LEFT)

    def _give_up(self, job: Job, why: str) -> None:
        """Take this photo off the queue (it was put back) and record the error."""
        kept = []
        while True:
            try:
                item = self.work.get_nowait()
            except queue.Empty:
                break
            if item.row is not job.row:
                kept.append(item)
        for item in kept:
            self.work.put(item)
        self._settle(job.row, Outcome(job.row, "error", None, attempts=job.attempts, error=why))

    def _drain(self, why: str) -> None:
        """Record every photo still queued as an error."""
        while True:
            try:
                job = self.work.get_nowait()
            except queue.Empty:
                return
            self._settle(job.row, Outcome(job.row, "error", None, attempts=job.attempts, error=why))
