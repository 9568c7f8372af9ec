"""The ComfyUI host, in this process: find it, import it the way ``main.py`` does, load the nodes, run a prompt.

Nothing here starts a server or touches the network. The host is imported once per process; a second call with
the same checkout reuses it (the tests' conftest may have imported it already).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import time
import traceback
import uuid
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from .errors import ExecutionError, HostNotFoundError, UsageError, ValidationError
from .pack import pack_module

compat = pack_module("host.compat")  # at import time: setup_host drops the pack folder from sys.path

PACK_ROOT = Path(os.path.abspath(__file__)).parent.parent
PACK_NODE_ID = "NTP_DDIMInvert"  # one of this pack's nodes: present once the pack is loaded
IMAGE_SUBFOLDER = "nulltext_p2p"  # --image copies land in <input>/nulltext_p2p/
CLIENT_ID = "nulltext-p2p-runner"

_NODES_READY = False


# ----------------------------------------------------------------------------------------------------------------
# Finding and importing the host
# ----------------------------------------------------------------------------------------------------------------
def is_comfyui_dir(path: Path) -> bool:
    return (path / "comfy").is_dir() and (path / "nodes.py").is_file() and (path / "execution.py").is_file()


def find_comfyui(explicit: Optional[str] = None, environ: Mapping = os.environ,
                 pack_root: Path = PACK_ROOT) -> Path:
    """The ComfyUI checkout: --comfyui, else $COMFYUI_PATH, else the one already imported in this process, else the
    checkout this pack sits in (<ComfyUI>/custom_nodes/<pack>), else ~/ComfyUI."""
    tried = []
    if explicit:
        path = Path(explicit).expanduser()
        if is_comfyui_dir(path):
            return path.resolve()
        raise HostNotFoundError(f"--comfyui {explicit}: not a ComfyUI checkout (no comfy/, nodes.py, execution.py).")
    env = environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser()
        if is_comfyui_dir(path):
            return path.resolve()
        raise HostNotFoundError(f"COMFYUI_PATH={env}: not a ComfyUI checkout (no comfy/, nodes.py, execution.py).")
    loaded = sys.modules.get("folder_paths")
    if loaded is not None and getattr(loaded, "__file__", None):
        path = Path(loaded.__file__).resolve().parent
        if is_comfyui_dir(path):
            return path
    candidates = [pack_root.parent.parent]
    pwd = environ.get("PWD")
    if pwd and Path(pwd).resolve() == pack_root.resolve():  # cd custom_nodes/<pack> through a symlink
        candidates.append(Path(pwd).parent.parent)
    candidates.append(pack_root.resolve().parent.parent)
    for path in candidates:
        tried.append(str(path))
        if path.parent != path and is_comfyui_dir(path):
            return path.resolve()
    home = Path(os.path.expanduser("~")) / "ComfyUI"
    tried.append(str(home))
    if is_comfyui_dir(home):
        return home.resolve()
    raise HostNotFoundError("ComfyUI not found (tried " + ", ".join(dict.fromkeys(tried)) + "). Pass --comfyui "
                            "/path/to/ComfyUI or set COMFYUI_PATH, or install this pack in ComfyUI/custom_nodes/.")


def _drop_pack_root_from_sys_path(pack_root: Path = PACK_ROOT) -> None:
    """`python -m runner` from the pack root puts it on sys.path, where its nodes/ would shadow the host's nodes.py."""
    keep = []
    for entry in sys.path:
        try:
            same = Path(entry or os.getcwd()).resolve() == pack_root.resolve()
        except OSError:
            same = False
        if not same:
            keep.append(entry)
    sys.path[:] = keep


@dataclass
class Host:
    path: Path
    folder_paths: Any
    execution: Any
    nodes: Any
    comfy_utils: Any
    model_management: Any


def setup_host(path: Path, cpu: bool = False, log: Callable[[str], None] = print) -> Host:
    """Import the host from ``path`` like main.py: argv untouched, ``--cpu`` if asked, ``utils.install_util`` before
    ``execution``/``nodes`` (or ``utils`` resolves to comfy/utils.py), extra_model_paths.yaml honoured."""
    path = Path(path).resolve()
    if not is_comfyui_dir(path):
        raise HostNotFoundError(f"{path}: not a ComfyUI checkout (no comfy/, nodes.py, execution.py).")
    loaded = sys.modules.get("folder_paths")
    if loaded is not None and Path(loaded.__file__).resolve().parent != path:
        raise HostNotFoundError(f"another ComfyUI ({Path(loaded.__file__).resolve().parent}) is already imported in "
                                f"this process; cannot also use {path}.")
    first_import = "nodes" not in sys.modules or "execution" not in sys.modules
    _drop_pack_root_from_sys_path()
    if str(path) in sys.path:
        sys.path.remove(str(path))
    sys.path.insert(0, str(path))

    import comfy.options  # noqa: F401  (args_parsing stays False: the host never parses our argv)
    from comfy.cli_args import args

    if cpu:
        mm = sys.modules.get("comfy.model_management")
        if mm is None:
            args.cpu = True
        elif mm.cpu_state != mm.CPUState.CPU:
            log("warning: --cpu ignored: the host was already imported with another device in this process.")
    try:
        import utils.install_util  # noqa: F401  (before execution/nodes, see the module docstring)

        import comfy.model_management
        import comfy.utils
        import execution
        import folder_paths
        import nodes
    except Exception as e:  # noqa: BLE001 - any import failure of the host is reported the same way
        hint = ""
        if "cuda" in str(e).lower() and not cpu:
            hint = " No usable GPU: add --cpu."
        elif isinstance(e, ImportError):
            hint = " Run the runner with the Python environment ComfyUI runs in."
        raise HostNotFoundError(f"importing ComfyUI from {path} failed: {type(e).__name__}: {e}.{hint}") from e

    if first_import:
        extra = path / "extra_model_paths.yaml"
        if extra.is_file():
            import utils.extra_config

            utils.extra_config.load_extra_path_config(str(extra))
    return Host(path=path, folder_paths=folder_paths, execution=execution, nodes=nodes, comfy_utils=comfy.utils,
                model_management=comfy.model_management)


async def init_nodes(host: Host, pack_root: Path = PACK_ROOT) -> None:
    """Load core, comfy_extras and custom nodes (``nodes.init_extra_nodes``; API nodes are skipped), then this pack
    if it is not installed in custom_nodes/, with the runner's server stand-in as ``PromptServer.instance`` (see
    ``install_server_stub``). Once per process."""
    global _NODES_READY
    nodes = host.nodes
    if _NODES_READY and PACK_NODE_ID in nodes.NODE_CLASS_MAPPINGS:
        return
    try:
        import hook_breaker_ac10a0 as hook_breaker
    except ImportError:  # pragma: no cover - older hosts
        hook_breaker = None
    install_server_stub()  # main.py creates the PromptServer before init_extra_nodes: node modules use it to load
    if hook_breaker is not None:
        hook_breaker.save_functions()
    try:
        await nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False)
        if PACK_NODE_ID not in nodes.NODE_CLASS_MAPPINGS:
            ok = await _register_imported_pack(nodes, pack_root)
            if not ok:
                ok = await nodes.load_custom_node(str(pack_root), ignore=set(nodes.NODE_CLASS_MAPPINGS),
                                                  module_parent="custom_nodes")
            if not ok or PACK_NODE_ID not in nodes.NODE_CLASS_MAPPINGS:
                raise HostNotFoundError(f"the nulltext-p2p nodes at {pack_root} failed to load into ComfyUI (see the "
                                        "log above).")
    finally:
        if hook_breaker is not None:
            hook_breaker.restore_functions()
    _NODES_READY = True


async def _register_imported_pack(nodes, pack_root: Path) -> bool:
    """If this pack is already imported in the process (e.g. as a package by a test session), register that copy's
    nodes rather than loading a second copy whose classes would differ from the first's. False if not imported."""
    init_file = (pack_root / "__init__.py").resolve()
    for module in list(sys.modules.values()):
        if getattr(module, "__path__", None) is None:  # not a package: e.g. pytest's import of the bare __init__.py
            continue
        try:
            if not getattr(module, "__file__", None) or Path(module.__file__).resolve() != init_file:
                continue
        except (OSError, TypeError):
            continue
        module_name = f"custom_nodes.{pack_root.name}"
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings:
            for name, cls in mappings.items():
                nodes.NODE_CLASS_MAPPINGS.setdefault(name, cls)
                cls.RELATIVE_PYTHON_MODULE = module_name
            nodes.NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
            return True
        entrypoint = getattr(module, "comfy_entrypoint", None)
        if entrypoint is None:
            continue
        extension = entrypoint()
        if asyncio.iscoroutine(extension):
            extension = await extension
        for cls in await extension.get_node_list():
            schema = cls.GET_SCHEMA()
            nodes.NODE_CLASS_MAPPINGS.setdefault(schema.node_id, cls)
            cls.RELATIVE_PYTHON_MODULE = module_name
            if schema.display_name is not None:
                nodes.NODE_DISPLAY_NAME_MAPPINGS[schema.node_id] = schema.display_name
        return True
    return False


class HostNodeDefinitions(Mapping):
    """``class_type -> node info`` in the ``GET /object_info`` format, built from the host's own node classes on
    first use (V3 nodes through ``GET_NODE_INFO_V1``, V1 nodes through ``INPUT_TYPES``, as server.py does)."""

    def __init__(self, nodes_module):
        self._nodes = nodes_module
        self._cache: dict = {}

    def _info(self, name: str) -> dict:
        cls = self._nodes.NODE_CLASS_MAPPINGS[name]
        try:
            from comfy_api.internal import _ComfyNodeInternal
        except ImportError:  # pragma: no cover - older hosts
            _ComfyNodeInternal = ()
        if _ComfyNodeInternal and isinstance(cls, type) and issubclass(cls, _ComfyNodeInternal):
            return cls.GET_NODE_INFO_V1()
        inputs = cls.INPUT_TYPES()
        return {
            "input": inputs,
            "input_order": {k: list(v.keys()) for k, v in inputs.items()},
            "output": list(getattr(cls, "RETURN_TYPES", ())),
            "output_name": list(getattr(cls, "RETURN_NAMES", getattr(cls, "RETURN_TYPES", ()))),
            "name": name,
            "display_name": self._nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        }

    def __getitem__(self, name: str) -> dict:
        if name not in self._cache:
            if name not in self._nodes.NODE_CLASS_MAPPINGS:
                raise KeyError(name)
            self._cache[name] = self._info(name)
        return self._cache[name]

    def __iter__(self):
        return iter(self._nodes.NODE_CLASS_MAPPINGS)

    def __len__(self) -> int:
        return len(self._nodes.NODE_CLASS_MAPPINGS)

    def __contains__(self, name) -> bool:
        return name in self._nodes.NODE_CLASS_MAPPINGS


# ----------------------------------------------------------------------------------------------------------------
# Files: --image, --checkpoint, directories
# ----------------------------------------------------------------------------------------------------------------
def import_image(host: Host, image: str, option: str = "--image") -> str:
    """Make ``image`` loadable by Load Image; returns the name to put in the node. A file already inside the input
    folder is used where it is; any other is copied to <input>/nulltext_p2p/ (like an upload from the editor)."""
    src = Path(image).expanduser()
    if not src.is_file():
        raise UsageError(f"{option} {image}: no such file.")
    input_dir = Path(host.folder_paths.get_input_directory()).resolve()
    src = src.resolve()
    try:
        rel = src.relative_to(input_dir)
        return rel.as_posix()
    except ValueError:
        pass
    dest_dir = input_dir / IMAGE_SUBFOLDER
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    if not (dest.exists() and dest.stat().st_size == src.stat().st_size and dest.read_bytes() == src.read_bytes()):
        shutil.copyfile(src, dest)
    return f"{IMAGE_SUBFOLDER}/{src.name}"


def register_checkpoint(host: Host, checkpoint: str) -> str:
    """``--checkpoint``: a name in the checkpoints folders is kept; a path to a file is registered (its folder becomes
    a checkpoints folder for this run) and its file name returned."""
    path = Path(checkpoint).expanduser()
    looks_like_path = os.sep in checkpoint or (os.altsep and os.altsep in checkpoint) or path.is_file()
    names = host.folder_paths.get_filename_list("checkpoints")
    if checkpoint in names and not path.is_file():
        return checkpoint
    if path.is_file():
        host.folder_paths.add_model_folder_path("checkpoints", str(path.resolve().parent))
        host.folder_paths.filename_list_cache.pop("checkpoints", None)
        return path.name
    if looks_like_path:
        raise UsageError(f"--checkpoint {checkpoint}: no such file.")
    return checkpoint  # not found: the override names the known choices


@contextmanager
def directories(host: Host, output_dir: Optional[str], input_dir: Optional[str]) -> Iterator[None]:
    """Point the host's output/input folders elsewhere for the run, then restore them."""
    fp = host.folder_paths
    old_out, old_in = fp.get_output_directory(), fp.get_input_directory()
    try:
        if output_dir:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            fp.set_output_directory(str(Path(output_dir).resolve()))
        if input_dir:
            Path(input_dir).mkdir(parents=True, exist_ok=True)
            fp.set_input_directory(str(Path(input_dir).resolve()))
        yield
    finally:
        fp.set_output_directory(old_out)
        fp.set_input_directory(old_in)


# ----------------------------------------------------------------------------------------------------------------
# Running a prompt
# ----------------------------------------------------------------------------------------------------------------
class Reporter:
    """Progress on the terminal (stderr): one line per node, a progress counter for long nodes."""

    def __init__(self, prompt: Mapping, stream=None, quiet: bool = False):
        self.prompt = prompt
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_fraction: dict = {}
        self._open_line = False
        self._started = time.perf_counter()
        self._node_started: dict = {}

    def title(self, node_id: Any) -> str:
        node = self.prompt.get(str(node_id)) or {}
        return f"#{node_id} {(node.get('_meta') or {}).get('title') or node.get('class_type', '?')}"

    def _write(self, text: str, newline: bool = True) -> None:
        if self.quiet:
            return
        if self._open_line and newline:
            self.stream.write("\n")
            self._open_line = False
        self.stream.write(text + ("\n" if newline else ""))
        self.stream.flush()

    def line(self, text: str) -> None:
        self._write(text)

    def node_started(self, node_id: Any) -> None:
        self._node_started[str(node_id)] = time.perf_counter()
        self._write(f"  running {self.title(node_id)}")

    def cached(self, node_ids) -> None:
        if node_ids:
            self._write("  cached: " + ", ".join(self.title(n) for n in node_ids))

    def node_text(self, node_id: Any, texts) -> None:
        for text in texts or []:
            self._write(f"    {self.title(node_id)}: {text}")

    def progress(self, node_id: Any, value: float, total: float) -> None:
        if self.quiet or not total:
            return
        fraction = value / total
        if self.tty:
            self.stream.write(f"\r    {self.title(node_id)}: {int(value)}/{int(total)} ({fraction:.0%})")
            self.stream.flush()
            self._open_line = True
            return
        key = str(node_id)
        step = int(fraction * 4)  # 25 % steps in logs
        if self._last_fraction.get(key) != step:
            self._last_fraction[key] = step
            self._write(f"    {self.title(node_id)}: {int(value)}/{int(total)}")

    def finish(self) -> None:
        if self._open_line:
            self._write("", newline=True)


class ServerStub:
    """The runner's ``server.PromptServer.instance``: what node modules use of the server while they load
    (``routes`` and ``app`` to add HTTP routes, ``add_on_prompt_handler``, ``supports``, ``node_replace_manager``
    where the host has one) and what PromptExecutor and the progress machinery use while a prompt runs
    (``send_sync``, ``send_progress_text``, ``client_id``, ...), printing to a Reporter. Nothing is served: routes
    are collected, never bound to a socket."""

    def __init__(self, reporter: Optional[Reporter] = None):
        self.reporter = reporter if reporter is not None else Reporter({}, quiet=True)
        self.client_id: Optional[str] = None
        self.last_node_id: Optional[str] = None
        self.last_prompt_id: Optional[str] = None
        self.sockets: dict = {}
        self.sockets_metadata: dict = {}
        self.supports = ["custom_nodes_from_web"]  # as server.PromptServer
        self.number = 0
        self.on_prompt_handlers: list = []
        self.events: list = []
        try:
            from aiohttp import web  # the host's own dependency (server.py)

            self.routes = web.RouteTableDef()
            self.app = web.Application()
        except ImportError:  # pragma: no cover - every host needs aiohttp
            pass
        manager = compat.new_node_replace_manager()
        if manager is not None:
            self.node_replace_manager = manager

    @property
    def loop(self):
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return None

    def add_on_prompt_handler(self, handler) -> None:
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, json_data: dict) -> dict:
        """As server.PromptServer: each handler may change the request; one that raises is logged and skipped."""
        for handler in self.on_prompt_handlers:
            try:
                json_data = handler(json_data)
            except Exception:  # noqa: BLE001 - as the server
                logging.warning("[ERROR] An error occurred during the on_prompt_handler processing")
                logging.warning(traceback.format_exc())
        return json_data

    def send_sync(self, event, data, sid=None) -> None:
        self.events.append((event, data))
        if not isinstance(data, dict):
            return
        if event == "executing" and data.get("node") is not None:
            self.last_node_id = data["node"]
            self.reporter.node_started(data["node"])
        elif event == "execution_cached":
            self.reporter.cached(data.get("nodes") or [])
        elif event == "executed":
            output = data.get("output") or {}
            if isinstance(output, dict):
                self.reporter.node_text(data.get("node"), output.get("text"))

    def send_progress_text(self, text, node_id, sid=None) -> None:
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("utf-8", errors="replace")
        self.reporter.node_text(node_id, [text])

    def queue_updated(self) -> None:
        pass

    async def send(self, event, data, sid=None) -> None:  # pragma: no cover - some nodes call it
        pass

    async def send_json(self, event, data, sid=None) -> None:  # pragma: no cover - some nodes call it
        pass


def install_server_stub() -> Optional[Any]:
    """``server.PromptServer.instance``, made a ServerStub if the host has no server instance yet; it stays for the
    life of the process (a server's does). None if the host's server module cannot be imported (then neither can
    the node modules that use it, and the host says why when it loads them)."""
    try:
        import server
    except Exception:  # noqa: BLE001 - reported by the host when a node module imports it
        return None
    if getattr(server.PromptServer, "instance", None) is None:
        server.PromptServer.instance = ServerStub()
    return server.PromptServer.instance


@dataclass
class SavedFile:
    path: str
    kind: str  # "output" or "temp" (PreviewImage)
    node_id: str
    title: str


@dataclass
class RunResult:
    prompt_id: str
    prompt: dict
    saved: list = field(default_factory=list)
    ui_outputs: dict = field(default_factory=dict)
    executor: Any = None
    seconds: float = 0.0

    def node_outputs(self, node_id: str):
        """The cached outputs of a node after the run (a list per output), or None."""
        if self.executor is None:
            return None
        return compat.cached_node_outputs(self.executor.caches.outputs, str(node_id))


def format_validation_error(error: Optional[dict], node_errors: Optional[dict], prompt: Mapping) -> str:
    head = "ComfyUI rejected the workflow"
    if error:
        head += f": {error.get('message', '')}"
        if error.get("type") == "prompt_no_outputs":
            head += " (add a Save Image or Preview Image node)"
    lines = [head + "."]
    for node_id, entry in sorted((node_errors or {}).items(), key=lambda kv: (len(kv[0]), kv[0])):
        node = prompt.get(node_id) or {}
        title = (node.get("_meta") or {}).get("title") or entry.get("class_type")
        lines.append(f"  node {node_id} {title!r} ({entry.get('class_type')}):")
        for reason in entry.get("errors") or []:
            text = f"    - {reason.get('message', '')}"
            if reason.get("details"):
                text += f": {reason['details']}"
            lines.append(text)
            input_name = (reason.get("extra_info") or {}).get("input_name")
            if input_name == "ckpt_name":
                lines.append("      fix: put the checkpoint in ComfyUI/models/checkpoints, or pass --checkpoint "
                             "NAME_OR_PATH.")
            elif input_name == "image":
                lines.append("      fix: pass --image PATH (any image file).")
    if not node_errors and error and error.get("details"):
        lines.append(f"  {error['details']}")
    return "\n".join(lines)


def format_execution_error(message: Mapping, prompt: Mapping, verbose: bool = False) -> str:
    node_id = str(message.get("node_id"))
    node = prompt.get(node_id) or {}
    title = (node.get("_meta") or {}).get("title") or message.get("node_type")
    text = (f"node {node_id} {title!r} ({message.get('node_type')}) failed: "
            f"{message.get('exception_type', 'error').rsplit('.', 1)[-1]}: {message.get('exception_message', '').strip()}")
    if verbose and message.get("traceback"):
        text += "\n" + "".join(message["traceback"])
    return text


def collect_saved(host: Host, ui_outputs: Mapping, prompt: Mapping) -> list:
    saved = []
    for node_id, output in ui_outputs.items():
        if not isinstance(output, Mapping):
            continue
        title = ((prompt.get(node_id) or {}).get("_meta") or {}).get("title") or node_id
        for items in output.values():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, Mapping) and "filename" in item:
                    kind = item.get("type", "output")
                    base = host.folder_paths.get_directory_by_type(kind) or host.folder_paths.get_output_directory()
                    path = os.path.join(base, item.get("subfolder") or "", item["filename"])
                    saved.append(SavedFile(path=os.path.normpath(path), kind=kind, node_id=str(node_id), title=title))
    return saved


async def execute_prompt(host: Host, prompt: dict, workflow: Optional[Mapping] = None,
                         reporter: Optional[Reporter] = None, verbose: bool = False, executor=None) -> RunResult:
    """Validate with ``execution.validate_prompt`` and run with ``execution.PromptExecutor``; raises
    ValidationError / ExecutionError with readable messages.

    ``executor``: a PromptExecutor from an earlier RunResult to run with its caches, as a server does for
    successive prompts (nodes whose inputs did not change are not run again). It is only reused while the output
    and input folders stay the same: the executor keeps node objects, and Save Image remembers its folder."""
    execution = host.execution
    reporter = reporter or Reporter(prompt)
    prompt_id = str(uuid.uuid4())
    folders = (host.folder_paths.get_output_directory(), host.folder_paths.get_input_directory(),
               host.folder_paths.get_temp_directory())
    if executor is not None and getattr(executor, "_nulltext_p2p_folders", None) != folders:
        executor = None
    if executor is None:
        instance = install_server_stub()  # the one the nodes loaded with (its on_prompt handlers, node replacements)
        server = instance if isinstance(instance, ServerStub) else ServerStub()
    else:
        server = executor.server
    extra_data: dict = {"client_id": CLIENT_ID}
    if workflow is not None:
        extra_data["extra_pnginfo"] = {"workflow": workflow}  # saved PNGs open in the editor, as from the UI
    prompt, extra_data = _as_posted(server, prompt, extra_data)
    reporter.prompt = prompt
    valid = await execution.validate_prompt(prompt_id, prompt, None)
    ok, error, good_outputs, node_errors = valid[0], valid[1], valid[2], valid[3]
    if not ok or node_errors:
        raise ValidationError(format_validation_error(error, node_errors, prompt))

    if executor is None:
        executor = compat.new_prompt_executor(execution, server)
        executor._nulltext_p2p_folders = folders
    server.reporter = reporter
    server.last_prompt_id = prompt_id

    def hook(value, total, preview_image=None, prompt_id=None, node_id=None):
        try:
            from comfy_execution.utils import get_executing_context

            context = get_executing_context()
        except ImportError:  # pragma: no cover
            context = None
        if node_id is None and context is not None:
            node_id = context.node_id
        host.model_management.throw_exception_if_processing_interrupted()
        reporter.progress(node_id if node_id is not None else server.last_node_id, value, total)

    old_hook = host.comfy_utils.PROGRESS_BAR_HOOK
    host.comfy_utils.set_progress_bar_global_hook(hook)
    started = time.perf_counter()
    try:
        await executor.execute_async(prompt, prompt_id, extra_data, good_outputs)
    finally:
        host.comfy_utils.set_progress_bar_global_hook(old_hook)
        reporter.finish()
    seconds = time.perf_counter() - started
    failure = None
    for event, data in executor.status_messages:
        if event in ("execution_error", "execution_interrupted"):
            failure = (event, data)
    if failure is not None or not executor.success:
        if failure is None:
            raise ExecutionError("the prompt did not finish (no error message from ComfyUI).")
        event, data = failure
        if event == "execution_interrupted":
            raise ExecutionError(f"interrupted while running node {data.get('node_id')} ({data.get('node_type')}).")
        raise ExecutionError(format_execution_error(data, prompt, verbose))
    ui_outputs = dict((getattr(executor, "history_result", None) or {}).get("outputs") or {})
    result = RunResult(prompt_id=prompt_id, prompt=prompt, ui_outputs=ui_outputs, executor=executor, seconds=seconds)
    result.saved = collect_saved(host, ui_outputs, prompt)
    return result


def _as_posted(server, prompt: dict, extra_data: dict) -> tuple:
    """What the server's ``POST /prompt`` does to a prompt before validating it: the on_prompt handlers that node
    modules registered, then the node replacements (hosts that have them) for node types this host no longer has."""
    if getattr(server, "on_prompt_handlers", None):
        request = server.trigger_on_prompt({"prompt": prompt, "client_id": CLIENT_ID, "extra_data": extra_data})
        prompt = request.get("prompt", prompt)
        extra_data = request.get("extra_data", extra_data)
    manager = getattr(server, "node_replace_manager", None)
    if manager is not None:
        manager.apply_replacements(prompt)
    return prompt, extra_data


def run_sync(coro):
    """Run a coroutine to completion from synchronous code (the CLI, the tests)."""
    return asyncio.run(coro)
