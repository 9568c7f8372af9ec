"""The example photo of the example workflows, put where Load Image finds it.

The examples load ``nulltext_p2p_example.png`` (a drawing shipped in ``example_workflows/``). Load Image only
reads ComfyUI's input folder, so at start-up the pack copies the picture there when no file of that name is
there yet (never overwriting one); without it a new user opening an example would get an empty Load Image and a
validation error.
"""

from __future__ import annotations

import logging
import os
import shutil

EXAMPLE_IMAGE = "nulltext_p2p_example.png"
EXAMPLE_MASK = "masked_edit_mask.png"  # the mask of masked_edit.json (Load Image (as Mask))
EXAMPLE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_workflows")


def install_example_image(input_dir: str | None = None) -> str | None:
    """Copy the example photo (and the masked example's mask) into ``input_dir`` (default: the host's input folder)
    unless a file of that name is there. Returns the photo's path in the input folder, or None when it could not be
    put there (logged, never raised)."""
    install_example_file(EXAMPLE_MASK, input_dir)
    return install_example_file(EXAMPLE_IMAGE, input_dir)


def install_example_file(name: str, input_dir: str | None = None) -> str | None:
    """Copy ``example_workflows/<name>`` into ``input_dir`` unless a file of that name is there (see above)."""
    source = os.path.join(EXAMPLE_DIR, name)
    try:
        if input_dir is None:
            import folder_paths

            input_dir = folder_paths.get_input_directory()
        target = os.path.join(input_dir, name)
        if not os.path.exists(target) and os.path.isfile(source):
            os.makedirs(input_dir, exist_ok=True)
            tmp = f"{target}.{os.getpid()}.tmp"
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
            logging.info("[nulltext_p2p] copied the example file %s to %s", name, target)
        return target if os.path.exists(target) else None
    except Exception as e:  # a read-only input folder must not stop the pack from loading
        logging.warning("[nulltext_p2p] could not copy the example file %s into the input folder: %s", source, e)
        return None
