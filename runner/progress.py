"""The progress line of ``python -m runner batch``: a tqdm bar over the photos to run, or plain lines."""

from __future__ import annotations

import sys
import threading
import time


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
