"""Differences between the ComfyUI versions the pack runs on, in one place (tested: 0.3.64 and 0.33.0).

Each function papers over one change and names the host version that made it. Nothing here imports the host at
module level and nothing imports the rest of the pack, so the headless runner (a separate tool, not part of the
published pack) uses this module too.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator, Optional

import torch
from torch.overrides import TorchFunctionMode


# --------------------------------------------------------------------------------------------------------------
# The execution engine (used by the headless runner and the graph tests)
# --------------------------------------------------------------------------------------------------------------
def new_prompt_executor(execution: Any, server: Any) -> Any:
    """An ``execution.PromptExecutor`` with the classic output cache (outputs kept until their inputs change), as
    ``main.py --cache-classic`` builds it.

    0.19 added ``cache_args`` (a dict; ``execute_async`` reads ``cache_args["ram"]`` and ``["ram_inactive"]`` on
    every prompt, so the default ``None`` fails) in place of ``cache_size``; 0.23 made the RAM-pressure cache the
    server default. The runner keeps the classic cache so that an inversion is never evicted between edits.
    """
    params = inspect.signature(execution.PromptExecutor.__init__).parameters
    if "cache_args" in params:  # 0.19 and later
        return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0.0, "ram_inactive": 0.0})
    return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC)  # 0.3.64


def new_node_replace_manager() -> Optional[Any]:
    """The server's node-replacement registry (``app.node_replace_manager.NodeReplaceManager``), or None.

    0.33.0 has it (``comfy_extras/nodes_replacements.py`` registers the built-in replacements through
    ``PromptServer.instance.node_replace_manager`` while the nodes load); 0.3.64 has none. For the runner's server
    stand-in.
    """
    try:
        from app.node_replace_manager import NodeReplaceManager
    except ImportError:  # 0.3.64
        return None
    return NodeReplaceManager()


def cached_node_outputs(outputs_cache: Any, node_id: str) -> Optional[list]:
    """A node's cached outputs (one list per output) from an executor's output cache, or None.

    0.17 made the caches' ``get`` a coroutine (a synchronous ``get_local`` was added) and stores
    ``CacheEntry(ui, outputs)``; 0.3.64 has a synchronous ``get`` returning the outputs list itself.
    """
    get_local = getattr(outputs_cache, "get_local", None)
    entry = get_local(node_id) if get_local is not None else outputs_cache.get(node_id)
    if entry is None:
        return None
    return entry.outputs if hasattr(entry, "outputs") and not isinstance(entry, list) else entry


# --------------------------------------------------------------------------------------------------------------
# Node schema
# --------------------------------------------------------------------------------------------------------------
def schema_has_search_aliases(schema_cls: Any) -> bool:
    """True where ``io.Schema`` takes ``search_aliases`` (added in 0.33, indexed by frontend 1.49+; 0.3.64 has no
    such field and would refuse the keyword)."""
    import dataclasses

    return "search_aliases" in {f.name for f in dataclasses.fields(schema_cls)}


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------
class SharedOnClone:
    """Base of objects put into a ModelPatcher's options (attention patches, wrappers) whose state must stay one
    object across ``ModelPatcher.clone()``.

    0.3.64 deep-copies ``model_options`` on clone (a copied patch would record into a copy nobody reads); from 0.14
    on only the dicts and lists are copied, which keeps the same object anyway. ``__deepcopy__`` returns ``self``
    on both.
    """

    def __deepcopy__(self, memo):
        return self


def host_optimized_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                             attn_precision: Any, transformer_options: dict) -> torch.Tensor:
    """The host's ``optimized_attention`` with the block's ``transformer_options``.

    Both hosts accept the keyword (an ``optimized_attention_override`` in it applies from 0.3.64 on); 0.33's newer
    kernels read it, so a replace patch must pass it on.
    """
    import comfy.ldm.modules.attention as host_attention

    return host_attention.optimized_attention(q, k, v, heads, attn_precision=attn_precision,
                                              transformer_options=transformer_options)


def is_dynamic_patcher(patcher: Any) -> bool:
    """True for ``ModelPatcherDynamic`` (dynamic VRAM): the weights the layers compute with are cast per call from a
    cached copy (``comfy/ops.py``, ``_v_weight``), not read from the module parameters.

    0.12 made it the default on CUDA (``main.py``; CPU models fall back to the plain ``ModelPatcher``) and added
    ``ModelPatcher.is_dynamic()``; 0.3.64 has neither.
    """
    probe = getattr(patcher, "is_dynamic", None)
    return bool(probe()) if callable(probe) else False


def multigpu_device_count(patcher: Any) -> int:
    """How many extra devices the host may split a sampling batch over (0 if none).

    0.23 added multi-GPU cond batching: a patcher with ``multigpu`` additional models (the MultiGPU node) has its
    conditioning chunks spread over devices, so one attention call no longer sees every prompt row.
    """
    getter = getattr(patcher, "get_additional_models_with_key", None)
    return len(getter("multigpu")) if callable(getter) else 0


@contextlib.contextmanager
def pure_torch_rope() -> Iterator[None]:
    """While open, models take the host's pure-torch code paths that autograd can differentiate.

    0.33 computes rotary embeddings with ``comfy_kitchen`` kernels that have no backward (Qwen-Image: "no autograd
    formula was registered" for ``apply_rope1``) unless ``comfy.model_management.in_training`` is set, the flag the
    host's own training node sets. 0.3.64 has no such flag and differentiates its rotary embeddings as they are.
    """
    import comfy.model_management as mm

    if not hasattr(mm, "in_training"):  # 0.3.64
        yield
        return
    before = mm.in_training
    mm.in_training = True
    try:
        yield
    finally:
        mm.in_training = before


class InferenceTensorsCloned(TorchFunctionMode):
    """While active and autograd records, every inference tensor handed to a torch function is replaced by a plain
    clone, so autograd can save it for backward.

    Needed where the layers take their weights from tensors the host made under ``torch.inference_mode`` at call
    time (dynamic VRAM since 0.12: ``_v_weight``), which swapping the module parameters cannot reach. The clone
    copies the values exactly; it costs one copy of each weight per forward.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
            args = tuple(_plain(a) for a in args)
            if kwargs:
                kwargs = {k: _plain(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone() if value.is_inference() else value
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) and v.is_inference() for v in value):
        return type(value)(_plain(v) for v in value)
    return value
