"""``--url``: run on a ComfyUI server that is already running (the only network use of the runner).

Requests, all to the URL the user gave: ``GET /object_info`` (the server's node definitions, for the conversion),
``POST /upload/image`` (only with ``--image`` / ``--mask``), ``POST /prompt``, then ``GET /history/<id>`` every second until
the prompt is done, and ``GET /view`` to copy the results into ``--output-dir`` when one is given. urllib only.
``batch --url`` (runner/scheduler.py) uses the same requests, plus ``POST /queue`` / ``POST /interrupt`` with its own
prompt id on Ctrl-C or when a server stops answering in time.
"""

from __future__ import annotations

import json
import mimetypes
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from .app import build_prompt, check_files, load_workflow
from .convert import is_ui_workflow
from .errors import ExecutionError, RunnerError, UsageError, ValidationError
from .comfy_host import IMAGE_SUBFOLDER, format_execution_error, format_validation_error


class ServerError(RunnerError):
    exit_code = 5


def _request(url: str, data: Optional[bytes] = None, headers: Optional[dict] = None, timeout: float = 60.0):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ServerError(f"cannot reach ComfyUI at {url}: {reason}. Is the server running (python main.py "
                          "--listen 127.0.0.1 --port 8188)?") from None


def _json(url: str, payload: Any = None, timeout: float = 60.0):
    data = json.dumps(payload).encode() if payload is not None else None
    status, body = _request(url, data, {"Content-Type": "application/json"} if data else None, timeout)
    try:
        return status, json.loads(body.decode() or "null")
    except ValueError:
        return status, body.decode(errors="replace")


def fetch_object_info(base: str) -> dict:
    status, info = _json(f"{base}/object_info")
    if status != 200 or not isinstance(info, dict):
        raise ServerError(f"{base}/object_info answered {status}: is this a ComfyUI server?")
    return info


def upload_image(base: str, image: str, option: str = "--image") -> str:
    path = Path(image).expanduser()
    if not path.is_file():
        raise UsageError(f"{option} {image}: no such file.")
    boundary = uuid.uuid4().hex
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    parts = []
    for name, value in (("subfolder", IMAGE_SUBFOLDER), ("type", "input"), ("overwrite", "true")):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
                 f"Content-Type: {ctype}\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    status, body = _request(f"{base}/upload/image", b"".join(parts),
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    if status != 200:
        raise ServerError(f"uploading {image} to {base} failed ({status}): {body[:300]!r}")
    info = json.loads(body.decode())
    return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]


def queue_prompt(base: str, prompt: dict, workflow: Optional[dict], client_id: str) -> str:
    payload: dict = {"prompt": prompt, "client_id": client_id}
    if workflow is not None:
        payload["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
    status, answer = _json(f"{base}/prompt", payload)
    if status == 200 and isinstance(answer, dict) and answer.get("prompt_id"):
        if answer.get("node_errors"):
            raise ValidationError(format_validation_error(None, answer["node_errors"], prompt))
        return answer["prompt_id"]
    if isinstance(answer, dict) and ("error" in answer or "node_errors" in answer):
        error = answer.get("error")
        raise ValidationError(format_validation_error(error if isinstance(error, dict) else {"message": str(error)},
                                                      answer.get("node_errors"), prompt))
    raise ServerError(f"{base}/prompt answered {status}: {str(answer)[:300]}")


def wait_for_history(base: str, prompt_id: str, timeout: Optional[float] = None, poll: float = 1.0,
                     stream=None) -> dict:
    stream = stream or sys.stderr
    started = time.monotonic()
    last_note = started
    while True:
        status, history = _json(f"{base}/history/{prompt_id}")
        if status == 200 and isinstance(history, dict) and prompt_id in history:
            entry = history[prompt_id]
            if (entry.get("status") or {}).get("completed") or entry.get("outputs") \
                    or (entry.get("status") or {}).get("status_str") == "error":
                return entry
        now = time.monotonic()
        if timeout is not None and now - started > timeout:
            raise ServerError(f"prompt {prompt_id} not finished after {timeout:.0f} s (it keeps running on the "
                              "server).")
        if now - last_note >= 10:
            stream.write(f"  waiting for the server ({now - started:.0f} s)\n")
            stream.flush()
            last_note = now
        time.sleep(poll)


def fetch(base: str, item: dict) -> tuple:
    """(HTTP status, bytes) of one output file (``GET /view``)."""
    query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                    "type": item.get("type", "output")})
    return _request(f"{base}/view?{query}", timeout=300.0)


def cancel_prompt(base: str, prompt_id: str) -> None:
    """Best effort: take our prompt off the server's queue, or interrupt it if it is running (``POST /queue``
    ``{"delete": [id]}``, ``POST /interrupt`` ``{"prompt_id": id}``: other users' prompts are not touched)."""
    for path, payload in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
        try:
            _json(f"{base}{path}", payload, timeout=5.0)
        except RunnerError:
            pass


def download(base: str, item: dict, output_dir: str) -> str:
    query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                    "type": item.get("type", "output")})
    status, body = _request(f"{base}/view?{query}")
    if status != 200:
        raise ServerError(f"downloading {item['filename']} failed ({status}).")
    dest = Path(output_dir) / (item.get("subfolder") or "") / item["filename"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(body)
    return str(dest)


def run_remote(url: str, workflow_path: str, image: Optional[str] = None, checkpoint: Optional[str] = None,
               sets: Iterable[str] = (), output_dir: Optional[str] = None, timeout: Optional[float] = None,
               stream=None, mask: Optional[str] = None) -> list[tuple[str, str]]:
    """Queue the workflow on a running server and wait. Returns (kind, path or URL) per result file."""
    stream = stream or sys.stderr
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--url {url}: expected http://HOST:PORT.")
    workflow = load_workflow(workflow_path)
    check_files(image, mask)
    definitions = fetch_object_info(base)
    image_name = upload_image(base, image) if image is not None else None
    mask_name = upload_image(base, mask, "--mask") if mask is not None else None
    prompt = build_prompt(workflow, definitions, image_name, checkpoint, sets, mask_name)
    prompt_id = queue_prompt(base, prompt, workflow if is_ui_workflow(workflow) else None, uuid.uuid4().hex)
    stream.write(f"queued prompt {prompt_id} on {base}\n")
    stream.flush()
    entry = wait_for_history(base, prompt_id, timeout, stream=stream)
    status = entry.get("status") or {}
    if status.get("status_str") == "error":
        for event, data in status.get("messages") or []:
            if event == "execution_error":
                raise ExecutionError(format_execution_error(data, prompt))
            if event == "execution_interrupted":
                raise ExecutionError(f"interrupted while running node {data.get('node_id')}.")
        raise ExecutionError(f"prompt {prompt_id} failed on the server.")
    results = []
    for node_id, output in (entry.get("outputs") or {}).items():
        for items in (output or {}).values():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and "filename" in item:
                    if output_dir:
                        results.append((item.get("type", "output"), download(base, item, output_dir)))
                    else:
                        query = urllib.parse.urlencode({"filename": item["filename"],
                                                        "subfolder": item.get("subfolder", ""),
                                                        "type": item.get("type", "output")})
                        results.append((item.get("type", "output"), f"{base}/view?{query}"))
    return results
