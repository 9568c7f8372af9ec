"""A stand-in for torchvision where it cannot be imported (test and benchmark environments only).

The host imports torchvision at module level (cascade, cosmos) though SD 1.x never uses it. The test environment
has a CPU torch wheel without a matching torchvision, so a placeholder package is installed that raises
``ModuleNotFoundError`` on first real use. Users' ComfyUI installs have torchvision and never see this.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types


def install_torchvision_placeholder() -> bool:
    """True if torchvision was unusable and the placeholder was installed."""
    try:
        import torchvision  # noqa: F401

        return False
    except Exception:  # ImportError, or RuntimeError from a CUDA torchvision on a CPU torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    try:  # let transformers record "no torchvision" (lru_cached) before the placeholder exists
        from transformers.utils import import_utils

        import_utils.is_torchvision_available()
    except Exception:  # pragma: no cover
        pass

    def missing(modname):
        def __getattr__(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            raise ModuleNotFoundError(
                f"torchvision is not usable in this environment ({modname}.{attr} requested); "
                "the nulltext-p2p tests installed a placeholder"
            )

        return __getattr__

    root = types.ModuleType("torchvision")
    root.__spec__ = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
    root.__path__ = []  # a package, so `import torchvision.transforms` works
    root.__getattr__ = missing("torchvision")
    sys.modules["torchvision"] = root
    for sub in ("transforms", "models", "ops", "io", "utils", "datasets"):
        mod = types.ModuleType(f"torchvision.{sub}")
        mod.__spec__ = importlib.machinery.ModuleSpec(f"torchvision.{sub}", None)
        mod.__getattr__ = missing(f"torchvision.{sub}")
        sys.modules[f"torchvision.{sub}"] = mod
        setattr(root, sub, mod)
    return True
