"""GPU-only tests: the real ``ModelPatcherDynamic`` (dynamic VRAM, host 0.12 and later) on a CUDA machine.

Not part of ``tests/`` (CI machines have no GPU): run ``COMFYUI_PATH=/path/to/ComfyUI python -m pytest -q tests_gpu``
on a machine with an NVIDIA GPU. The host is imported on its GPU and dynamic VRAM is switched on the way
``main.py`` does it (``comfy_aimdo.control.init_devices``, ``CoreModelPatcher = ModelPatcherDynamic``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))  # tiny_model, helpers
_link_dir = tempfile.TemporaryDirectory(prefix="nulltext_p2p_pkg_")
os.symlink(REPO_ROOT, os.path.join(_link_dir.name, "nulltext_p2p"), target_is_directory=True)
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != REPO_ROOT]
sys.path.insert(0, _link_dir.name)

HOST = Path(os.environ.get("COMFYUI_PATH", os.path.expanduser("~/ComfyUI")))


@pytest.fixture(scope="session")
def dynamic_host():
    """The host on CUDA with dynamic VRAM on; skips (this folder only) without CUDA or without dynamic VRAM."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: tests_gpu needs one")
    if not (HOST / "comfy").is_dir():
        pytest.skip(f"no ComfyUI at {HOST}: set COMFYUI_PATH")
    sys.path.insert(0, str(HOST))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import utils.install_util  # noqa: F401  (before execution/nodes)
    import comfy.model_management
    import comfy.model_patcher

    if not hasattr(comfy.model_patcher, "ModelPatcherDynamic"):
        pytest.skip("this host has no ModelPatcherDynamic (added in 0.12)")
    import comfy_aimdo.control
    import comfy.memory_management

    devices = [d.index or 0 for d in comfy.model_management.get_all_torch_devices()]
    try:
        ok = comfy_aimdo.control.init_devices((d, 0) for d in devices)
    except TypeError:  # comfy-aimdo 0.4.9 protocol
        ok = comfy_aimdo.control.init_devices(iter(devices))
    if not ok:
        pytest.skip("comfy-aimdo could not be initialised on this GPU")
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True
    return comfy
