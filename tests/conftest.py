"""Test set-up for the nulltext-p2p pack: the ComfyUI host, the package import, and a tiny SD1.x model.

The host
    Found at ``$COMFYUI_PATH`` or else ``$HOME/ComfyUI`` (a folder holding ``comfy/`` and ``nodes.py``). When
    found it goes first on ``sys.path``, is switched to CPU (``args.cpu = True`` before
    ``comfy.model_management`` is imported; ``comfy.options.args_parsing`` stays False so pytest's argv is never
    parsed) and ``utils.install_util`` is imported before anything imports ``execution``/``nodes`` (``nodes.py``
    puts ``comfy/`` first on ``sys.path``, after which ``utils`` would resolve to ``comfy/utils.py``).

The package
    The repo root is NOT put on ``sys.path`` (its ``nodes/`` folder would shadow the host's ``nodes.py``; it is
    even removed where ``python -m pytest`` put it). Instead a session temp dir holding a symlink
    ``nulltext_p2p -> <repo root>`` goes on ``sys.path``: tests do ``from nulltext_p2p.core import ...``.

Host tests
    A test needs the host when it uses the ``host`` fixture (directly or through ``tiny_model``,
    ``tiny_checkpoint_path``, ``checkpoint_dir``, ``tiny_checkpoint_name``) or carries ``@pytest.mark.host``.
    Such tests get the ``host`` marker automatically, are skipped with a loud reason when no host is found, and
    are counted in a one-line summary at the end of the run::

        nulltext-p2p: host tests: 12 passed, 0 failed, 0 skipped (ComfyUI 0.3.64 at /root/ComfyUI)

    Host found but broken (an import error) is an error, not a skip.

torchvision
    The host imports torchvision at module level (cosmos, cascade; only used inside model classes SD1.x never
    builds). Where torchvision cannot be imported (absent, or a CUDA build next to a CPU torch), a placeholder
    module is installed that raises ``ModuleNotFoundError`` on first real use; the summary line says so.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import types
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/: shared test helpers
from torchvision_placeholder import install_torchvision_placeholder  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_NAME = "nulltext_p2p"
TINY_CHECKPOINT_NAME = "nulltext_p2p_tiny_sd15.safetensors"
TINY_SEED = 0

# No network: everything here is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


# --------------------------------------------------------------------------------------------------------------
# The package as `nulltext_p2p`, without the repo root on sys.path
# --------------------------------------------------------------------------------------------------------------
def _drop_repo_root_from_sys_path() -> None:
    keep = []
    for entry in sys.path:
        try:
            resolved = Path(entry or os.getcwd()).resolve()
        except OSError:
            keep.append(entry)
            continue
        if resolved != REPO_ROOT:
            keep.append(entry)
    sys.path[:] = keep


_PKG_LINK_DIR = tempfile.TemporaryDirectory(prefix="nulltext_p2p_pkg_")  # lives as long as the session
os.symlink(REPO_ROOT, os.path.join(_PKG_LINK_DIR.name, PACKAGE_NAME), target_is_directory=True)
_drop_repo_root_from_sys_path()
sys.path.insert(0, _PKG_LINK_DIR.name)


# --------------------------------------------------------------------------------------------------------------
# The host
# --------------------------------------------------------------------------------------------------------------
def _find_host() -> tuple[Path | None, str]:
    """(path, description): the ComfyUI checkout, or None and why not."""
    env = os.environ.get("COMFYUI_PATH")
    candidate = Path(env).expanduser() if env else Path(os.path.expanduser("~")) / "ComfyUI"
    source = "COMFYUI_PATH" if env else "$HOME/ComfyUI"
    if (candidate / "comfy").is_dir() and (candidate / "nodes.py").is_file():
        return candidate.resolve(), ""
    return None, f"{source}={candidate} holds no comfy/ and nodes.py"


def _host_version(path: Path) -> str:
    try:
        text = (path / "comfyui_version.py").read_text()
        return text.split("__version__", 1)[1].split("=", 1)[1].strip().split()[0].strip("\"'")
    except (OSError, IndexError):
        return "unknown version"


HOST_PATH, HOST_MISSING_WHY = _find_host()
HOST_VERSION = _host_version(HOST_PATH) if HOST_PATH else None
HOST_SKIP_REASON = (
    f"ComfyUI host not found ({HOST_MISSING_WHY}): set COMFYUI_PATH=/path/to/ComfyUI (0.3.64 or later); "
    "host tests skipped"
)
TORCHVISION_PLACEHOLDER = False

if HOST_PATH is not None:
    if str(HOST_PATH) in sys.path:
        sys.path.remove(str(HOST_PATH))
    sys.path.insert(0, str(HOST_PATH))
    import comfy.options  # noqa: E402  (args_parsing stays False: the host parses no argv)

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args as _host_args  # noqa: E402

    if "comfy.model_management" in sys.modules:  # pragma: no cover - something imported it first
        raise RuntimeError("comfy.model_management was imported before the tests could select the CPU")
    _host_args.cpu = True
    import utils.install_util  # noqa: E402,F401  (before execution/nodes: see module docstring)

    TORCHVISION_PLACEHOLDER = install_torchvision_placeholder()


# --------------------------------------------------------------------------------------------------------------
# Markers, skipping, counting
# --------------------------------------------------------------------------------------------------------------
_HOST_NODEIDS: set[str] = set()
_HOST_OUTCOMES: dict[str, str] = {}
_HOST_FIXTURES = {"host", "tiny_model", "tiny_checkpoint_path", "checkpoint_dir", "tiny_checkpoint_name", "tiny_sdxl",
                  "tiny_sd3", "tiny_qwen_image", "tiny_flux", "tiny_chroma"}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "host: needs the ComfyUI host (added automatically to tests that use the `host` fixture)"
    )


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        if _HOST_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.host)
        if item.get_closest_marker("host") is not None:
            _HOST_NODEIDS.add(item.nodeid)


def pytest_runtest_setup(item):
    if HOST_PATH is None and item.get_closest_marker("host") is not None:
        pytest.skip(HOST_SKIP_REASON)


def pytest_runtest_logreport(report):
    if report.nodeid not in _HOST_NODEIDS:
        return
    previous = _HOST_OUTCOMES.get(report.nodeid)
    if report.failed:
        _HOST_OUTCOMES[report.nodeid] = "failed"
    elif report.skipped and previous != "failed":
        _HOST_OUTCOMES[report.nodeid] = "skipped"
    elif report.when == "call" and report.passed and previous is None:
        _HOST_OUTCOMES[report.nodeid] = "passed"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts = {k: sum(1 for v in _HOST_OUTCOMES.values() if v == k) for k in ("passed", "failed", "skipped")}
    head = f"nulltext-p2p: host tests: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
    if HOST_PATH is not None:
        tail = f"(ComfyUI {HOST_VERSION} at {HOST_PATH}"
        tail += "; torchvision unusable, placeholder installed)" if TORCHVISION_PLACEHOLDER else ")"
    else:
        tail = f"(ComfyUI host NOT found: {HOST_MISSING_WHY}; set COMFYUI_PATH)"
    terminalreporter.write_line(f"{head} {tail}", red=HOST_PATH is None or counts["failed"] > 0, bold=True)


# --------------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same RNG state (python, numpy, torch)."""
    random.seed(0)
    try:
        import numpy

        numpy.random.seed(0)
    except ImportError:  # pragma: no cover
        pass
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def host():
    """The ComfyUI host: a namespace with ``path``, ``version`` and the imported ``comfy.model_management``,
    ``comfy.sd`` and ``folder_paths`` modules. Skips (loudly) when no host is found."""
    if HOST_PATH is None:
        pytest.skip(HOST_SKIP_REASON)
    import comfy.model_management
    import comfy.sd
    import folder_paths

    assert comfy.model_management.cpu_state == comfy.model_management.CPUState.CPU, "host is not on the CPU"
    return types.SimpleNamespace(
        path=HOST_PATH,
        version=HOST_VERSION,
        model_management=comfy.model_management,
        sd=comfy.sd,
        folder_paths=folder_paths,
        torchvision_placeholder=TORCHVISION_PLACEHOLDER,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint_path(host, tmp_path_factory) -> str:
    """Path (str) of the tiny SD1.x checkpoint, built once per session (seed 0) in a session temp dir."""
    from tiny_model import build_tiny_sd15_checkpoint

    folder = tmp_path_factory.mktemp("tiny_checkpoints")
    return build_tiny_sd15_checkpoint(str(folder / TINY_CHECKPOINT_NAME), seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_model(host, tiny_checkpoint_path):
    """``(model_patcher, clip, vae)`` from the host's own loader. Shared by the session: clone before patching."""
    out = host.sd.load_checkpoint_guess_config(
        tiny_checkpoint_path, output_vae=True, output_clip=True, embedding_directory=None
    )
    return out[0], out[1], out[2]


@pytest.fixture(scope="session")
def tiny_sdxl(host):
    """``(model_patcher, clip, vae)`` of the tiny SDXL-layout model (host classes, built directly: the host's
    loader only detects full-size SDXL UNets; see tests/tiny_sdxl.py). Shared by the session: clone before patching."""
    from tiny_sdxl import build_tiny_sdxl

    return build_tiny_sdxl(seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_sd3(host):
    """``(model_patcher, clip, vae)`` of the tiny SD3-layout model (tests/tiny_sd3.py). Shared by the session."""
    from tiny_sd3 import build_tiny_sd3

    return build_tiny_sd3(seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_qwen_image(host):
    """``(model_patcher, clip, vae)`` of the tiny Qwen-Image-layout model (tests/tiny_qwen_image.py)."""
    from tiny_qwen_image import build_tiny_qwen_image

    return build_tiny_qwen_image(seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_flux(host):
    """``(model_patcher, clip, vae)`` of the tiny Flux-dev model (tests/tiny_flux.py)."""
    from tiny_flux import build_tiny_flux

    return build_tiny_flux(seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_chroma(host):
    """``(model_patcher, clip, vae)`` of the tiny Chroma model (tests/tiny_flux.py)."""
    from tiny_flux import build_tiny_chroma

    return build_tiny_chroma(seed=TINY_SEED)


@pytest.fixture(scope="session")
def checkpoint_dir(host, tiny_checkpoint_path) -> str:
    """The folder holding the tiny checkpoint, registered as a ComfyUI ``checkpoints`` folder, so that
    ``CheckpointLoaderSimple(ckpt_name=tiny_checkpoint_name)`` loads it."""
    folder = os.path.dirname(tiny_checkpoint_path)
    host.folder_paths.add_model_folder_path("checkpoints", folder)
    host.folder_paths.filename_list_cache.pop("checkpoints", None)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint_name(checkpoint_dir) -> str:
    """File name of the tiny checkpoint inside ``checkpoint_dir`` (the ``ckpt_name`` a loader node takes)."""
    return TINY_CHECKPOINT_NAME


def pytest_collection_finish(session):
    """pytest may put the repo root (it holds an ``__init__.py``) on sys.path while importing test modules; drop it
    again before any test runs, or ``import nodes`` inside the host would find this pack's ``nodes/``."""
    _drop_repo_root_from_sys_path()
