"""The pack's own modules (``host.compat``, ``core.attention_edit``) as the runner reaches them."""

from __future__ import annotations

import importlib
from types import ModuleType


def pack_module(name: str) -> ModuleType:
    """The pack's module ``name`` (e.g. ``"host.compat"``), imported the way the runner itself was imported.

    Both ways are needed. As a subpackage of the pack (``nulltext_p2p.runner``: the tests, ``python -m
    <pack>.runner``) the pack's modules are its siblings, ``<pack>.host.compat``. As a top-level package
    (``python -m runner`` from the pack folder, whose name may contain a hyphen, so the pack itself cannot be
    imported as a package; bench/run_bench.py) there is no parent package and they are the top-level ``host`` and
    ``core``, found through the pack folder on sys.path[0]. Import them before ``comfy_host.setup_host``: it drops
    the pack folder from sys.path (its nodes/ would shadow the host's nodes.py).
    """
    pack = __package__.rpartition(".")[0]
    return importlib.import_module(f"{pack}.{name}" if pack else name)
