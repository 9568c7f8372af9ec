"""UI-format workflow (what the ComfyUI editor saves) -> API prompt (what ``/prompt`` and the executor take).

Pure functions, no host import: the node definitions come in as a mapping ``class_type -> node info`` in the
format of the host's ``GET /object_info`` (built in-process from the host's own classes by
``runner.comfy_host.HostNodeDefinitions``, or fetched from a running server in ``--url`` mode).

What the editor does and this module repeats
    * ``widgets_values`` is a list with one value per widget, in the order of the node's inputs (required, then
      optional; ``input_order``). Widgets are the INT, FLOAT, STRING, BOOLEAN and COMBO inputs without
      ``forceInput``. The editor adds widgets of its own that are saved too and are *not* inputs:
      ``control_after_generate`` after a seed ("fixed"/"increment"/"decrement"/"randomize") and the
      ``upload`` button of an image/video/audio upload combo ("image"), appended after the node's last required
      input (right after the combo for Load Image; after ``channel`` for Load Image (as Mask)). Those values are
      skipped.
    * A widget turned into an input socket (``inputs[i].widget.name``) takes its value from the link.
    * Note, MarkdownNote and other editor-only nodes are dropped; Reroute nodes are followed; PrimitiveNode
      (the editor's primitive) is replaced by its value; muted nodes (mode 2) are dropped with their links;
      bypassed nodes (mode 4) pass their input of the same type through.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from .errors import ConversionError

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "upload")
SEED_NAMES = {"seed", "noise_seed"}
# Nodes that exist only in the editor: never sent to the backend.
EDITOR_ONLY_DROPPED = {"Note", "MarkdownNote", "Label", "Comment"}
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
MODE_MUTED = 2
MODE_BYPASSED = 4


# ----------------------------------------------------------------------------------------------------------------
# Node definitions (object_info format)
# ----------------------------------------------------------------------------------------------------------------
class InputSpec:
    """One input of a node class: name, category (required/optional), type, options, and whether it is a widget."""

    __slots__ = ("name", "category", "type", "options", "choices")

    def __init__(self, name: str, category: str, type_: Any, options: Optional[dict]):
        self.name = name
        self.category = category
        self.options = dict(options or {})
        if isinstance(type_, (list, tuple)):  # V1 combo: the list of choices is the type
            self.type = "COMBO"
            self.choices: Optional[list] = list(type_)
        else:
            self.type = str(type_)
            self.choices = list(self.options["options"]) if self.type == "COMBO" and "options" in self.options else None

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def has_control_widget(self) -> bool:
        return bool(self.options.get("control_after_generate")) or (self.type == "INT" and self.name in SEED_NAMES)

    @property
    def has_upload_widget(self) -> bool:
        return self.type == "COMBO" and any(self.options.get(k) for k in UPLOAD_OPTIONS)

    @property
    def multiline(self) -> bool:
        return self.type == "STRING" and bool(self.options.get("multiline"))

    def describe(self) -> str:
        if self.type == "COMBO":
            return "COMBO (one of a list)"
        return self.type

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"InputSpec({self.name!r}, {self.category}, {self.type})"


def node_inputs(info: Mapping) -> list[InputSpec]:
    """The inputs of a node class in the editor's order (required, then optional; hidden inputs left out)."""
    inputs = info.get("input") or {}
    order = info.get("input_order") or {}
    specs = []
    for category in ("required", "optional"):
        section = inputs.get(category) or {}
        names = list(order.get(category) or section.keys())
        for name in names:
            if name not in section:
                continue
            entry = section[name]
            if isinstance(entry, (list, tuple)) and entry:
                type_, options = entry[0], (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
            else:
                type_, options = entry, {}
            specs.append(InputSpec(name, category, type_, options))
    return specs


def input_spec(info: Mapping, name: str) -> Optional[InputSpec]:
    for spec in node_inputs(info):
        if spec.name == name:
            return spec
    return None


def display_name(info: Optional[Mapping], class_type: str) -> str:
    if info and info.get("display_name"):
        return str(info["display_name"])
    return class_type


# ----------------------------------------------------------------------------------------------------------------
# widgets_values -> named inputs
# ----------------------------------------------------------------------------------------------------------------
def map_widget_values(values: Any, info: Mapping, where: str = "node") -> dict:
    """Name the saved widget values of one node, using its class's inputs. Missing trailing values (a node that
    gained widgets since the workflow was saved) fall back to the input's default, as the editor does."""
    widgets = [s for s in node_inputs(info) if s.is_widget]
    if values is None:
        values = []
    if isinstance(values, Mapping):  # some nodes save a dict; keep the known names
        return {s.name: values[s.name] for s in widgets if s.name in values}
    if not isinstance(values, (list, tuple)):
        raise ConversionError(f"{where}: widgets_values must be a list, got {type(values).__name__}.")
    values = list(values)
    out: dict = {}
    i = 0
    # the editor appends the upload button to the required inputs (frontend: ``required.upload = ...``)
    required = [k for k, s in enumerate(widgets) if s.category == "required"]
    upload_after = required[-1] if required and any(widgets[k].has_upload_widget for k in required) else None
    for w_index, spec in enumerate(widgets):
        if i >= len(values):
            if "default" in spec.options:
                out[spec.name] = spec.options["default"]
            continue
        out[spec.name] = values[i]
        i += 1
        remaining_widgets = len(widgets) - w_index - 1
        if i < len(values) and isinstance(values[i], str):
            if spec.has_control_widget and values[i] in CONTROL_VALUES:
                i += 1
            elif w_index == upload_after and len(values) - i > remaining_widgets:
                i += 1
            elif spec.type in ("INT", "FLOAT") and values[i] in CONTROL_VALUES and len(values) - i > remaining_widgets:
                i += 1  # a control widget the editor added on its own
    if i < len(values):
        names = [s.name for s in widgets]
        raise ConversionError(
            f"{where}: the workflow holds {len(values)} widget values {values!r} but this ComfyUI's node has "
            f"{len(widgets)} widgets {names}: the workflow was saved with another version of the node. Open it in "
            "the editor and save it again.")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Links
# ----------------------------------------------------------------------------------------------------------------
def _links_by_id(workflow: Mapping) -> dict:
    links = {}
    for entry in workflow.get("links") or []:
        if isinstance(entry, Mapping):
            link = (entry["id"], entry["origin_id"], entry["origin_slot"], entry["target_id"], entry["target_slot"],
                    entry.get("type"))
        elif isinstance(entry, (list, tuple)) and len(entry) >= 5:
            link = tuple(entry[:6]) if len(entry) >= 6 else tuple(entry[:5]) + (None,)
        else:
            raise ConversionError(f"the workflow's links array holds a malformed entry {entry!r}.")
        links[link[0]] = link
    return links


def _types_match(a: Any, b: Any) -> bool:
    if a in (None, "*", "") or b in (None, "*", ""):
        return True
    sa, sb = set(str(a).split(",")), set(str(b).split(","))
    return bool(sa & sb)


class _Graph:
    def __init__(self, workflow: Mapping):
        if not isinstance(workflow, Mapping) or not isinstance(workflow.get("nodes"), list):
            raise ConversionError(
                "not a UI-format workflow (no 'nodes' list). If this is an API-format prompt (saved with "
                "'Export (API)'), it needs no conversion.")
        self.nodes = {}
        for node in workflow["nodes"]:
            if not isinstance(node, Mapping) or "id" not in node or "type" not in node:
                raise ConversionError(f"the workflow holds a malformed node {str(node)[:200]}.")
            self.nodes[node["id"]] = node
        self.links = _links_by_id(workflow)

    def label(self, node: Mapping) -> str:
        title = node.get("title")
        return f"node #{node['id']} ({node['type']}{', ' + repr(title) if title else ''})"

    def resolve(self, link_id: Any, where: str, depth: int = 0):
        """Follow a link to its real source: ("link", [id, slot]), ("value", v) or None (source muted/unlinked)."""
        if link_id is None:
            return None
        if depth > 64:
            raise ConversionError(f"{where}: the links loop through Reroute/bypassed nodes.")
        link = self.links.get(link_id)
        if link is None:
            raise ConversionError(f"{where}: link {link_id} is missing from the workflow's links array.")
        _, origin_id, origin_slot, _, _, link_type = link
        origin = self.nodes.get(origin_id)
        if origin is None:
            raise ConversionError(f"{where}: link {link_id} comes from node #{origin_id}, which is not in the workflow.")
        mode = origin.get("mode", 0)
        if mode == MODE_MUTED:
            return None
        if origin["type"] == REROUTE:
            inputs = origin.get("inputs") or []
            return self.resolve(inputs[0].get("link") if inputs else None, where, depth + 1)
        if origin["type"] == PRIMITIVE:
            values = origin.get("widgets_values") or []
            if not values:
                raise ConversionError(f"{where}: the primitive {self.label(origin)} holds no value.")
            return ("value", values[0])
        if mode == MODE_BYPASSED:
            outputs = origin.get("outputs") or []
            out_type = outputs[origin_slot].get("type") if origin_slot < len(outputs) else link_type
            inputs = origin.get("inputs") or []
            same = inputs[origin_slot] if origin_slot < len(inputs) else None
            candidates = ([same] if same is not None else []) + [inp for inp in inputs if inp is not same]
            for inp in candidates:
                if inp.get("link") is not None and _types_match(inp.get("type"), out_type):
                    return self.resolve(inp["link"], where, depth + 1)
            return None
        if origin["type"] in EDITOR_ONLY_DROPPED:
            raise ConversionError(f"{where}: linked to {self.label(origin)}, an editor-only node with no outputs.")
        return ("link", [str(origin_id), int(origin_slot)])


# ----------------------------------------------------------------------------------------------------------------
# Workflow -> prompt
# ----------------------------------------------------------------------------------------------------------------
def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list)


def is_api_prompt(data: Any) -> bool:
    return (isinstance(data, Mapping) and bool(data)
            and all(isinstance(v, Mapping) and "class_type" in v for v in data.values()))


def workflow_to_prompt(workflow: Mapping, definitions: Mapping[str, Mapping]) -> dict:
    """Convert a UI-format workflow to an API prompt ``{id: {"class_type", "inputs", "_meta": {"title"}}}``.

    Raises ConversionError naming the node for unknown node types, subgraphs, broken links and widget values
    that do not fit the node's definition."""
    graph = _Graph(workflow)
    subgraph_ids = {str(s.get("id")) for s in ((workflow.get("definitions") or {}).get("subgraphs") or [])
                    if isinstance(s, Mapping)}
    unknown = []
    prompt: dict = {}
    for node_id, node in graph.nodes.items():
        class_type = node["type"]
        mode = node.get("mode", 0)
        if class_type in EDITOR_ONLY_DROPPED or class_type in (REROUTE, PRIMITIVE):
            continue
        if mode in (MODE_MUTED, MODE_BYPASSED):
            continue
        where = graph.label(node)
        if class_type in subgraph_ids:
            raise ConversionError(f"{where} is a subgraph; the runner does not expand subgraphs. Unpack it in the "
                                  "editor (right-click > Unpack Subgraph) and save the workflow again.")
        if str(class_type).startswith("workflow>") or str(class_type).startswith("workflow/"):
            raise ConversionError(f"{where} is a group node; convert it back to nodes in the editor first.")
        info = definitions.get(class_type)
        if info is None:
            unknown.append(f"{where}")
            continue
        inputs = map_widget_values(node.get("widgets_values"), info, where)
        specs = {s.name: s for s in node_inputs(info)}
        for slot in node.get("inputs") or []:
            name = (slot.get("widget") or {}).get("name") or slot.get("name")
            link_id = slot.get("link")
            if link_id is None:
                continue
            resolved = graph.resolve(link_id, f"{where} input '{name}'")
            if resolved is None:
                if name in specs and not specs[name].is_widget:
                    inputs.pop(name, None)
                continue
            inputs[name] = resolved[1]
        title = node.get("title") or display_name(info, class_type)
        prompt[str(node_id)] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}
    if unknown:
        raise ConversionError(
            "unknown node type(s) in this ComfyUI: " + "; ".join(unknown) + ". Install the custom node pack that "
            "provides them (or check the ComfyUI log: it may have failed to import).")
    if not prompt:
        raise ConversionError("the workflow has no nodes to run.")
    return prompt

