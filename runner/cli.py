"""Command line of the headless runner (``python -m runner --help`` from the pack folder)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from typing import Optional, Sequence

from .errors import RunnerError

EPILOG = """\
examples (from the pack folder, e.g. ComfyUI/custom_nodes/nulltext-p2p):
  python -m runner run example_workflows/word_swap.json --image photo.jpg \\
      --checkpoint v1-5-pruned-emaonly.safetensors \\
      --set "Attention Controller.target_prompts=a dog sitting on a table" \\
      --set "Attention Controller.blend_words=cat, dog"
  python -m runner run example_workflows/invert_and_reconstruct.json --image photo.jpg --cpu --output-dir out
  python -m runner convert example_workflows/refine.json -o refine_api.json
  python -m runner run example_workflows/word_swap.json --image photo.jpg --url http://127.0.0.1:8188
  python -m runner run example_workflows/masked_edit.json --image photo.jpg \\
      --mask example_workflows/masked_edit_mask.png
  python -m runner batch photos/ --workflow example_workflows/word_swap.json --captions photos/captions.csv
  python -m runner batch photos/ --workflow example_workflows/word_swap.json --captions photos/captions.csv \\
      --url http://host1:8188 --url http://host2:8188

--set NODE.INPUT=VALUE: NODE is a node id, title ("Attention Controller"), type (NTP_AttentionController) or
display name; VALUE is parsed to the input's type (INT, FLOAT, BOOLEAN, STRING, COMBO). In multi-line text
inputs, \\n starts a new line (several target prompts). Repeat --set for several values.
exit status: 0 done, 1 unexpected error, 2 bad arguments/workflow/override or ComfyUI not found,
3 rejected by ComfyUI's validation, 4 a node failed while running (batch: a photo failed), 5 server unreachable
(--url), 130 interrupted (batch: the summary is written; run the same command again to resume).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runner",
        description="Run a ComfyUI workflow (UI format, as the editor saves it) without the UI: in this process "
                    "with the ComfyUI checkout found on disk, or on a running server with --url.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{run,convert,batch}")
    sub.required = True

    def common(p):
        p.add_argument("workflow", help="workflow .json (UI format; an API-format prompt works too)")
        p.add_argument("--image", metavar="PATH", help="image for every Load Image node")
        p.add_argument("--mask", metavar="PATH", help="mask image for every Load Image (as Mask) node (e.g. "
                                                      "example_workflows/masked_edit_mask.png)")
        p.add_argument("--checkpoint", metavar="NAME_OR_PATH",
                       help="checkpoint for every checkpoint loader: a name in models/checkpoints or a file path")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                       help="set a node input (repeatable)")
        p.add_argument("--comfyui", metavar="PATH",
                       help="ComfyUI checkout (default: $COMFYUI_PATH, else the one this pack is installed in)")
        p.add_argument("--input-dir", metavar="DIR", help="ComfyUI input folder for this run (in-process only)")
        p.add_argument("--url", metavar="URL",
                       help="use the ComfyUI server at URL (e.g. http://127.0.0.1:8188) instead of running here")
        p.add_argument("-v", "--verbose", action="store_true", help="host log at INFO level, tracebacks on errors")

    run = sub.add_parser("run", help="convert, validate and execute a workflow",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(run)
    run.add_argument("--output-dir", metavar="DIR", help="where Save Image writes (default: ComfyUI/output; with "
                                                         "--url: download the results here)")
    run.add_argument("--cpu", action="store_true", help="run on the CPU (in-process only)")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="with --url: stop waiting after this long")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the saved paths")
    run.add_argument("--print-prompt", action="store_true", help="print the API prompt (stderr) before running")

    conv = sub.add_parser("convert", help="print the API-format prompt (with the overrides applied); runs nothing")
    common(conv)
    conv.add_argument("-o", "--output", metavar="FILE", help="write the prompt here instead of stdout")

    batch = sub.add_parser(
        "batch", help="run a workflow for every photo of a folder (captions and edits from a CSV), resumable",
        description="Run the workflow once per row of the captions CSV (columns file, source, targets; optional "
                    "blend, reweight, mode; several targets separated by '|'), in this process or spread over "
                    "running ComfyUI servers (--url, repeatable). Each finished photo gets OUTPUT/<photo id>/ "
                    "(images, the saved inversion, result.json), moved into place by one rename, so a rerun skips "
                    "finished photos; OUTPUT/summary.csv lists every photo (seconds, PSNR, files or the error).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("folder", help="folder of the photos (the CSV's 'file' column is relative to it)")
    batch.add_argument("--workflow", required=True, metavar="FILE",
                       help="workflow .json with one DDIM Invert, one Attention Controller and an Edited Sample "
                            "(e.g. example_workflows/word_swap.json)")
    batch.add_argument("--captions", required=True, metavar="CSV",
                       help="captions file (see example_workflows/captions.csv)")
    batch.add_argument("--output-dir", metavar="DIR",
                       help="results and summary.csv (default: FOLDER/nulltext_p2p_batch)")
    batch.add_argument("--checkpoint", metavar="NAME_OR_PATH",
                       help="checkpoint for every checkpoint loader (with --url: a name the servers have)")
    batch.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                       help="set a node input for every photo (repeatable)")
    batch.add_argument("--mask", metavar="PATH", help="mask image for every Load Image (as Mask) node")
    batch.add_argument("--url", dest="urls", action="append", default=[], metavar="URL",
                       help="a running ComfyUI server; repeat for several (one photo per free server; a photo "
                            "whose server dies runs on another)")
    batch.add_argument("--redo", action="store_true", help="run finished photos again (their results are replaced)")
    batch.add_argument("--timeout", type=float, metavar="SECONDS",
                       help="with --url: a server that takes longer for one photo is dropped (the photo moves on)")
    batch.add_argument("--comfyui", metavar="PATH",
                       help="ComfyUI checkout (default: $COMFYUI_PATH, else the one this pack is installed in)")
    batch.add_argument("--input-dir", metavar="DIR", help="ComfyUI input folder (in-process only)")
    batch.add_argument("--cpu", action="store_true", help="run on the CPU (in-process only)")
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the table")
    batch.add_argument("-v", "--verbose", action="store_true", help="host log at INFO level, tracebacks on errors")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    root = logging.getLogger()
    if not root.handlers:  # a fresh process (not inside another program's logging set-up)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        if not args.verbose:  # the runner prints validation/execution errors itself, once and readably
            handler.addFilter(lambda r: not (r.module == "execution" and r.levelno >= logging.ERROR))
        root.addHandler(handler)
        root.setLevel(logging.INFO if args.verbose else logging.WARNING)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    try:
        if args.command == "convert":
            return _convert(args, log)
        if args.command == "batch":
            return _batch(args, log)
        return _run(args, log)
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug or an unforeseen host problem: say so, traceback with -v
        if args.verbose:
            traceback.print_exc()
        print(f"error: unexpected {type(e).__name__}: {e}" + ("" if args.verbose else " (-v shows the traceback)"),
              file=sys.stderr)
        return 1


def _convert(args, log) -> int:
    if args.url:
        from .app import build_prompt, load_workflow
        from .remote import fetch_object_info, upload_image

        workflow = load_workflow(args.workflow)
        base = args.url.rstrip("/")
        definitions = fetch_object_info(base)
        image_name = upload_image(base, args.image) if args.image else None
        mask_name = upload_image(base, args.mask, "--mask") if args.mask else None
        prompt = build_prompt(workflow, definitions, image_name, args.checkpoint, args.sets, mask_name)
    else:
        from .app import convert_in_process
        from .comfy_host import run_sync

        prompt = run_sync(convert_in_process(args.workflow, args.image, args.checkpoint, args.sets, args.comfyui,
                                             args.input_dir, log, mask=args.mask))
    text = json.dumps(prompt, indent=2, ensure_ascii=False)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        log(f"wrote {args.output}")
    else:
        print(text)
    return 0


def _run(args, log) -> int:
    if args.url:
        from .remote import run_remote

        if args.cpu or args.input_dir:
            log("note: --cpu and --input-dir apply to in-process runs only; the server keeps its own settings.")
        results = run_remote(args.url, args.workflow, args.image, args.checkpoint, args.sets, args.output_dir,
                             args.timeout, mask=args.mask)
        for kind, where in results:
            print(where if kind == "output" else f"{where}  (preview, temporary)")
        return 0

    from .app import run_in_process
    from .comfy_host import Reporter, run_sync

    reporter = Reporter({}, quiet=args.quiet)

    def show_prompt(prompt: dict) -> None:
        log(json.dumps(prompt, indent=2, ensure_ascii=False))

    result = run_sync(run_in_process(args.workflow, args.image, args.checkpoint, args.sets, args.comfyui,
                                     args.output_dir, args.input_dir, args.cpu, reporter, args.verbose,
                                     None if args.quiet else log,
                                     on_prompt=show_prompt if args.print_prompt else None, mask=args.mask))
    if not args.quiet:
        log(f"done in {result.seconds:.1f} s; {sum(1 for s in result.saved if s.kind == 'output')} file(s) saved:")
    for saved in result.saved:
        if saved.kind == "output":
            print(saved.path)
        elif not args.quiet:
            log(f"{saved.path}  (preview from {saved.title!r}, temporary)")
    return 0


def _batch(args, log) -> int:
    from .batch import batch_in_process, batch_remote
    from .captions import read_captions
    from .progress import Progress
    from .summary import format_table

    read_captions(args.captions)  # a bad CSV fails here, before anything is imported or contacted
    progress = Progress(quiet=args.quiet)
    if args.urls:
        if args.cpu or args.input_dir or args.comfyui:
            log("note: --cpu, --input-dir and --comfyui apply to in-process runs only; the servers keep their own.")
        result = batch_remote(args.urls, args.folder, args.workflow, args.captions, args.output_dir,
                              args.checkpoint, args.sets, redo=args.redo, mask=args.mask, timeout=args.timeout,
                              progress=progress)
    else:
        from .comfy_host import run_sync

        result = run_sync(batch_in_process(args.folder, args.workflow, args.captions, args.output_dir,
                                           args.checkpoint, args.sets, args.comfyui, args.input_dir, args.cpu,
                                           redo=args.redo, mask=args.mask, progress=progress,
                                           log=None if args.quiet else log, verbose=args.verbose))
    print(format_table(result.outcomes))
    done = sum(1 for o in result.outcomes if o.status in ("done", "skipped"))
    log(f"{done}/{len(result.outcomes)} photos finished; summary: {result.summary}")
    if result.interrupted:
        log("interrupted: run the same command again to go on (finished photos are skipped).")
        return 130
    return 4 if result.failed else 0
