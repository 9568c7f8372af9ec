"""A batch's output folder: each photo runs in ``.staging/<photo id>-<token>/``, its outputs land there, and the
finished folder becomes ``<photo id>/`` by one rename (complete or absent)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Mapping, Optional

from .captions import Row

STAGING = ".staging"
RESULT_FILE = "result.json"


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


def result_record(row: Row, seconds: float, psnr, ssim, server: str, attempts: int) -> dict:
    """The photo's result.json (``BatchOutput.finish`` adds the outputs)."""
    return {"file": row.file, "row": row.as_dict(), "seconds": round(seconds, 3), "psnr": psnr, "ssim": ssim,
            "server": server, "attempts": attempts, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


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


def local_name(item: Mapping, subfolder: str) -> str:
    """Where an output file goes inside the photo's folder: Save Image files without the attempt folder,
    everything else (the inversion) under its own subfolder."""
    sub = item.get("subfolder", "").replace("\\", "/").strip("/")
    if sub == subfolder or sub.startswith(subfolder + "/"):
        sub = sub[len(subfolder):].strip("/")
    return f"{sub}/{item['filename']}" if sub else item["filename"]


def move_into(attempt: Path, rel: str, src: Path) -> None:
    """Land a file the host wrote (in-process) in the attempt folder."""
    dest = attempt / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dest))


def write_into(attempt: Path, rel: str, data: bytes) -> None:
    """Land a file downloaded from a server in the attempt folder (written to a temporary name, then renamed)."""
    dest = attempt / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
