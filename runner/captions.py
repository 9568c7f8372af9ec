"""The captions file of ``python -m runner batch``: one row per photo (the format is in runner/batch.py's docstring)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .pack import pack_module

COLUMNS_REQUIRED = ("file", "source", "targets")
COLUMNS_OPTIONAL = ("blend", "reweight", "mode")
_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


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
        row = _row(values, line, f"--captions {path}, line {line}")
        if row.photo_id in seen:
            raise UsageError(f"--captions {path}, line {line}: {row.file!r} names the same photo as line "
                             f"{seen[row.photo_id]} (result folder {row.photo_id!r}).")
        seen[row.photo_id] = line
        rows.append(row)
    if not rows:
        raise UsageError(f"--captions {path}: no rows; {fmt}")
    return rows


def _row(values: dict, line: int, where: str) -> Row:
    """One record of the file (its values stripped) as a Row; UsageError starting with ``where``."""
    for column in COLUMNS_REQUIRED:
        if not values.get(column):
            raise UsageError(f"{where}: the column '{column}' is empty.")
    mode = values.get("mode", "").lower()
    if mode and mode not in modes():
        raise UsageError(f"{where}: mode {values['mode']!r} is not one of {', '.join(modes())}.")
    return Row(file=values["file"], source=values["source"], targets=split_targets(values["targets"]),
               blend=values.get("blend", ""), reweight=values.get("reweight", ""), mode=mode, line=line)


def modes() -> tuple:
    """The edit modes: core's (``core.attention_edit.MODES``, the Attention Controller's ``mode``).

    Imported when a row has a mode, not with this module: core imports torch, which takes seconds, and the CLI
    checks the captions file first so that a bad one fails at once (also before setup_host, as pack_module needs).
    """
    return pack_module("core.attention_edit").MODES
