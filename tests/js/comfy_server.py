"""Start the real ComfyUI server (``main.py``) for the browser test, with a torchvision placeholder when needed.

Usage: ``python comfy_server.py <ComfyUI dir> <main.py arguments...>``

The host imports torchvision at module level (cascade, cosmos) though SD 1.x never uses it; the test
environment has a CPU torch without torchvision (as ``tests/conftest.py`` explains), so like the conftest this
installs a placeholder module that raises on first real use, then runs ``main.py`` unchanged as ``__main__``.
"""

from __future__ import annotations

import importlib.machinery
import os
import runpy
import sys
import types


def install_torchvision_placeholder() -> bool:
    try:
        import torchvision  # noqa: F401

        return False
    except Exception:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    try:  # let transformers record "no torchvision" before the placeholder exists
        from transformers.utils import import_utils

        import_utils.is_torchvision_available()
    except Exception:
        pass

    def missing(modname):
        def __getattr__(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            raise ModuleNotFoundError(f"torchvision is not usable here ({modname}.{attr}); placeholder of the nulltext-p2p tests")

        return __getattr__

    root = types.ModuleType("torchvision")
    root.__spec__ = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
    root.__path__ = []
    root.__getattr__ = missing("torchvision")
    sys.modules["torchvision"] = root
    for sub in ("transforms", "models", "ops", "io", "utils", "datasets"):
        mod = types.ModuleType(f"torchvision.{sub}")
        mod.__spec__ = importlib.machinery.ModuleSpec(f"torchvision.{sub}", None)
        mod.__getattr__ = missing(f"torchvision.{sub}")
        sys.modules[f"torchvision.{sub}"] = mod
        setattr(root, sub, mod)
    return True


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
