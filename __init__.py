"""Null-text Inversion + Prompt-to-Prompt for ComfyUI.

ComfyUI imports this package from ``custom_nodes/``. Nothing here imports the host at import time, so the
host-independent algorithm in ``core/`` can be imported (and tested) without ComfyUI.
"""

WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    """V3 entry point: the host calls this to get the pack's node list."""
    from .host.example_image import install_example_image
    from .nodes import NullTextP2PExtension

    install_example_image()
    return NullTextP2PExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
