"""What became of each photo of a batch: its outcome, the line the progress prints for it, ``summary.csv`` and the
table the command prints at the end."""

from __future__ import annotations

import csv
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from .captions import Row

SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = ("file", "status", "seconds", "psnr", "ssim", "server", "attempts", "outputs", "error")
IN_PROCESS = "in-process"  # the server column of a photo run in this process


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


def skipped(row: Row, result: dict) -> Outcome:
    """The outcome of a photo finished by an earlier run, from its result.json."""
    return Outcome(row=row, status="skipped", seconds=result.get("seconds"), psnr=result.get("psnr"),
                   ssim=result.get("ssim"), server=result.get("server", ""), attempts=result.get("attempts", 0),
                   outputs=list(result.get("outputs") or []))


def describe(outcome: Outcome) -> str:
    """The progress line of a photo."""
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


def ordered(rows: list, outcomes: dict) -> list:
    """The outcomes in the captions' order; a photo without one was interrupted before it ran."""
    return [outcomes.get(r.photo_id) or Outcome(row=r, status="not run", error="interrupted before it ran")
            for r in rows]


def write_summary(root: Path, outcomes: Iterable[Outcome]) -> Path:
    """``root/summary.csv``, written atomically (a temporary file, fsync, rename)."""
    path = root / SUMMARY_FILE
    tmp = root / f".{SUMMARY_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for outcome in outcomes:
            writer.writerow(outcome.csv_row())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


@dataclass
class BatchResult:
    outcomes: list
    summary: Path
    interrupted: bool = False

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if o.status in ("error", "not run")]
