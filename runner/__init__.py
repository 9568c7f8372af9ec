"""Headless runner for ComfyUI workflows (UI format, as the editor saves them), made for this pack's examples.

Usage, from the pack folder (the pack folder's name may contain a hyphen, so the runner is its own package)::

    cd ComfyUI/custom_nodes/nulltext-p2p
    python -m runner run example_workflows/word_swap.json --image photo.jpg \\
        --checkpoint v1-5-pruned-emaonly.safetensors \\
        --set "Attention Controller.target_prompts=a dog sitting on a table"

Use the Python environment ComfyUI runs in. Without ``--url`` the host is imported in this process (no server):
it is found through ``--comfyui PATH``, ``$COMFYUI_PATH``, or the ComfyUI checkout the pack sits in
(``<ComfyUI>/custom_nodes/<pack>``), and the workflow is converted to the API prompt format with the host's own
node definitions, validated with ``execution.validate_prompt`` and run with ``execution.PromptExecutor``. With
``--url http://127.0.0.1:8188`` the prompt goes to a running server instead. ``python -m runner --help`` lists
every option.

Modules: ``convert`` (UI format -> API prompt, pure), ``overrides`` (--set/--image/--checkpoint, pure),
``comfy_host`` (find/import/initialise the ComfyUI host, execute), ``remote`` (--url), ``app`` (both paths as
functions), ``pack`` (the pack's own modules), ``batch`` (``python -m runner batch``: a workflow per photo of a
folder, in-process or over several servers; its parts: ``captions``, ``photo_prompt``, ``staging``, ``progress``,
``summary``, ``scheduler`` for ``--url``), ``cli`` (argument parsing). Nothing here is imported by ComfyUI when
it loads the pack.
"""

from .errors import (ConversionError, ExecutionError, HostNotFoundError, OverrideError, RunnerError, UsageError,
                     ValidationError)

__all__ = ["RunnerError", "UsageError", "HostNotFoundError", "ConversionError", "OverrideError", "ValidationError",
           "ExecutionError"]
