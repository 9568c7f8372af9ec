"""Start the real ComfyUI server (``main.py``) for the browser test, with a torchvision placeholder when needed.

Usage: ``python comfy_server.py <ComfyUI dir> <main.py arguments...>``

The host imports torchvision at module level (cascade, cosmos) though SD 1.x never uses it; the test
environment has a CPU torch without torchvision (as ``tests/conftest.py`` explains), so like the conftest this
installs a placeholder module that raises on first real use, then runs ``main.py`` unchanged as ``__main__``.
"""

from __future__ import annotations

import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from torchvision_placeholder import install_torchvision_placeholder  # noqa: E402


def main() -> None:
    host = os.path.abspath(sys.argv[1])
    if install_torchvision_placeholder():
        print("comfy_server: torchvision unusable, placeholder installed", flush=True)
    os.chdir(host)
    sys.path.insert(0, host)
    sys.argv = [os.path.join(host, "main.py"), *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
