"""Overrides on an API prompt: ``--set "Node.input=value"``, ``--image``, ``--mask``, ``--checkpoint``.

Pure functions (no host import). A node is named by its id ("12" or "#12"), its title (what the editor shows,
e.g. "Attention Controller"), its class type ("NTP_AttentionController") or its display name; the first of these
that matches decides, and it must match exactly one node. Values are parsed to the input's type as the host
declares it (INT, FLOAT, BOOLEAN, STRING, COMBO) and checked against min/max and the list of choices.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional

from .convert import InputSpec, display_name, input_spec, node_inputs
from .errors import OverrideError

TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}


def parse_set(text: str) -> tuple[str, str, str]:
    """``"Node.input=value"`` -> (node reference, input name, raw value). The value may contain '=' and '.'."""
    if "=" not in text:
        raise OverrideError(f"--set {text!r}: expected NODE.INPUT=VALUE, e.g. "
                            "\"Attention Controller.target_prompts=a dog sitting on a table\".")
    left, raw = text.split("=", 1)
    left = left.strip()
    if "." not in left:
        raise OverrideError(f"--set {text!r}: expected NODE.INPUT=VALUE; '{left}' names no input (missing '.').")
    ref, name = left.rsplit(".", 1)
    ref, name = ref.strip(), name.strip()
    if not ref or not name:
        raise OverrideError(f"--set {text!r}: expected NODE.INPUT=VALUE with a node and an input name.")
    return ref, name, raw


def describe_nodes(prompt: Mapping, definitions: Mapping) -> str:
    rows = []
    for nid, node in sorted(prompt.items(), key=lambda kv: (len(kv[0]), kv[0])):
        title = (node.get("_meta") or {}).get("title") or node["class_type"]
        rows.append(f"  {nid}: {title!r} ({node['class_type']})")
    return "\n".join(rows)


def find_nodes(prompt: Mapping, definitions: Mapping, ref: str) -> list[str]:
    """Ids of the nodes a reference names (exactly one is usually wanted; see ``find_node``)."""
    key = ref.strip()
    if key.startswith("#") and key[1:] in prompt:
        return [key[1:]]
    if key in prompt:
        return [key]

    def title(node):
        return (node.get("_meta") or {}).get("title") or ""

    matchers = [
        lambda nid, n: title(n) == key,
        lambda nid, n: n["class_type"] == key,
        lambda nid, n: display_name(definitions.get(n["class_type"]), n["class_type"]) == key,
        lambda nid, n: title(n).casefold() == key.casefold() or n["class_type"].casefold() == key.casefold()
        or display_name(definitions.get(n["class_type"]), n["class_type"]).casefold() == key.casefold(),
    ]
    for match in matchers:
        found = [nid for nid, node in prompt.items() if match(nid, node)]
        if found:
            return sorted(found, key=lambda s: (len(s), s))
    return []


def find_node(prompt: Mapping, definitions: Mapping, ref: str, what: str) -> str:
    found = find_nodes(prompt, definitions, ref)
    if not found:
        raise OverrideError(f"{what}: no node is called {ref!r}. Name a node by id, title or type; this workflow has:\n"
                            + describe_nodes(prompt, definitions))
    if len(found) > 1:
        listing = ", ".join(f"{nid} ({(prompt[nid].get('_meta') or {}).get('title')!r})" for nid in found)
        raise OverrideError(f"{what}: {ref!r} matches {len(found)} nodes ({listing}); name one by its id, "
                            f"e.g. \"{found[0]}.…\".")
    return found[0]


def _range_check(spec: InputSpec, value: float, what: str) -> None:
    lo, hi = spec.options.get("min"), spec.options.get("max")
    if lo is not None and value < lo:
        raise OverrideError(f"{what}: {value} is below the minimum {lo}.")
    if hi is not None and value > hi:
        raise OverrideError(f"{what}: {value} is above the maximum {hi}.")


def coerce_value(spec: InputSpec, raw: Any, what: str, check_choices: bool = True) -> Any:
    """Parse a command-line string to the input's type (a non-string is checked as it is)."""
    text = raw.strip() if isinstance(raw, str) else raw
    if not spec.is_widget:
        raise OverrideError(f"{what}: '{spec.name}' is a {spec.type} input (a connection), not a value; only "
                            "INT, FLOAT, BOOLEAN, STRING and COMBO inputs can be set.")
    if spec.type == "INT":
        try:
            if isinstance(text, bool):
                raise ValueError
            value = int(text) if not isinstance(text, float) or text.is_integer() else None
            if value is None:
                raise ValueError
        except (TypeError, ValueError):
            raise OverrideError(f"{what}: expects an integer (INT), got {raw!r}.") from None
        _range_check(spec, value, what)
        return value
    if spec.type == "FLOAT":
        try:
            if isinstance(text, bool):
                raise ValueError
            value = float(text)
        except (TypeError, ValueError):
            raise OverrideError(f"{what}: expects a number (FLOAT), got {raw!r}.") from None
        if not math.isfinite(value):
            raise OverrideError(f"{what}: expects a finite number (FLOAT), got {raw!r}.")
        _range_check(spec, value, what)
        return value
    if spec.type == "BOOLEAN":
        if isinstance(text, bool):
            return text
        word = str(text).casefold()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise OverrideError(f"{what}: expects true or false (BOOLEAN), got {raw!r}.")
    if spec.type == "STRING":
        if not isinstance(raw, str):
            raise OverrideError(f"{what}: expects text (STRING), got {raw!r}.")
        return raw.replace("\\n", "\n") if spec.multiline else raw
    if spec.type == "COMBO":
        value = raw if not isinstance(raw, str) else raw.strip()
        if check_choices and spec.choices is not None and not spec.has_upload_widget and value not in spec.choices:
            shown = ", ".join(repr(c) for c in spec.choices[:20]) + (", ..." if len(spec.choices) > 20 else "")
            raise OverrideError(f"{what}: {value!r} is not one of the choices: {shown or '(none: the list is empty)'}.")
        return value
    raise OverrideError(f"{what}: inputs of type {spec.type} cannot be set from the command line.")  # pragma: no cover


def set_input(prompt: dict, definitions: Mapping, node_id: str, name: str, raw: Any, what: str) -> None:
    node = prompt[node_id]
    info = definitions.get(node["class_type"]) or {}
    spec = input_spec(info, name)
    title = (node.get("_meta") or {}).get("title") or node["class_type"]
    if spec is None:
        names = [s.name for s in node_inputs(info) if s.is_widget]
        raise OverrideError(f"{what}: node {node_id} {title!r} ({node['class_type']}) has no input {name!r}; its "
                            f"settable inputs are: {', '.join(names) if names else '(none)'}.")
    if not spec.is_widget:
        coerce_value(spec, raw, what)  # raises: a connection, not a value
    current = node["inputs"].get(name)
    if isinstance(current, list) and len(current) == 2 and isinstance(current[0], str):
        src = prompt.get(current[0])
        src_title = (src.get("_meta") or {}).get("title") if src else None
        hint = ""
        if src is not None:
            widgets = [w.name for w in node_inputs(definitions.get(src["class_type"]) or {}) if w.is_widget]
            if len(widgets) == 1:
                hint = f', e.g. --set "{src_title or current[0]}.{widgets[0]}=..."'
        raise OverrideError(f"{what}: input {name!r} of node {node_id} {title!r} is connected to node {current[0]}"
                            f" {src_title!r}; set that node instead{hint}.")
    node["inputs"][name] = coerce_value(spec, raw, what)


def apply_sets(prompt: dict, definitions: Mapping, sets: Iterable[str]) -> dict:
    """Apply ``--set`` strings in order (a later one wins). Returns the prompt (changed in place)."""
    for text in sets:
        ref, name, raw = parse_set(text)
        what = f"--set {text!r}"
        node_id = find_node(prompt, definitions, ref, what)
        set_input(prompt, definitions, node_id, name, raw, what)
    return prompt


def nodes_with_input(prompt: Mapping, definitions: Mapping, predicate) -> list[tuple[str, InputSpec]]:
    out = []
    for nid, node in prompt.items():
        for spec in node_inputs(definitions.get(node["class_type"]) or {}):
            if predicate(node, spec):
                out.append((nid, spec))
    return out


def _loads_mask_only(definitions: Mapping, node: Mapping) -> bool:
    """A loader whose outputs hold a MASK but no IMAGE (Load Image (as Mask))."""
    outputs = [str(o) for o in (definitions.get(node["class_type"]) or {}).get("output") or []]
    return "MASK" in outputs and "IMAGE" not in outputs


def _image_uploads(prompt: Mapping, definitions: Mapping, masks: bool) -> list[tuple[str, InputSpec]]:
    return nodes_with_input(prompt, definitions,
                            lambda node, spec: spec.has_upload_widget and bool(spec.options.get("image_upload"))
                            and _loads_mask_only(definitions, node) == masks)


def apply_image(prompt: dict, definitions: Mapping, image_name: str) -> list[str]:
    """Point every image-upload input of a node that loads an IMAGE (Load Image) at ``image_name`` (a name in the
    input folder). Returns the ids. Load Image (as Mask) nodes are left to ``--mask``."""
    targets = _image_uploads(prompt, definitions, masks=False)
    if not targets:
        raise OverrideError("--image: the workflow has no Load Image node to point at the image.")
    for nid, spec in targets:
        prompt[nid]["inputs"][spec.name] = image_name
    return [nid for nid, _ in targets]


def apply_mask(prompt: dict, definitions: Mapping, mask_name: str) -> list[str]:
    """Point every Load Image (as Mask) node (an image upload whose node outputs a MASK and no IMAGE) at
    ``mask_name``. Returns the ids."""
    targets = _image_uploads(prompt, definitions, masks=True)
    if not targets:
        raise OverrideError("--mask: the workflow has no Load Image (as Mask) node to point at the mask.")
    for nid, spec in targets:
        prompt[nid]["inputs"][spec.name] = mask_name
    return [nid for nid, _ in targets]


def apply_checkpoint(prompt: dict, definitions: Mapping, ckpt_name: str) -> list[str]:
    """Set ``ckpt_name`` of every checkpoint loader (CheckpointLoaderSimple and friends). Returns the ids."""
    targets = nodes_with_input(prompt, definitions, lambda node, spec: spec.name == "ckpt_name" and spec.is_widget)
    if not targets:
        raise OverrideError("--checkpoint: the workflow has no checkpoint loader (no node with a ckpt_name input).")
    for nid, spec in targets:
        if spec.choices is not None and ckpt_name not in spec.choices:
            shown = ", ".join(repr(c) for c in spec.choices[:20]) or "(none)"
            raise OverrideError(f"--checkpoint: {ckpt_name!r} is not among this ComfyUI's checkpoints: {shown}. Put "
                                "the file in ComfyUI/models/checkpoints (or, running in-process, pass its path).")
        prompt[nid]["inputs"][spec.name] = ckpt_name
    return [nid for nid, _ in targets]


def apply_overrides(prompt: dict, definitions: Mapping, image_name: Optional[str] = None,
                    checkpoint: Optional[str] = None, sets: Iterable[str] = (), mask_name: Optional[str] = None) -> dict:
    """--image, --mask, then --checkpoint, then every --set (so --set can still change one node)."""
    if image_name is not None:
        apply_image(prompt, definitions, image_name)
    if mask_name is not None:
        apply_mask(prompt, definitions, mask_name)
    if checkpoint is not None:
        apply_checkpoint(prompt, definitions, checkpoint)
    apply_sets(prompt, definitions, sets)
    return prompt
