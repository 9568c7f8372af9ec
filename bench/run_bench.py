"""Benchmark: the cost and quality of DDIM inversion, null-text optimisation, fast modes and an edit.

    python bench/run_bench.py                       # tiny random model on CPU, 50 steps at 64 px (2 cores)
    python bench/run_bench.py --size 128 --steps 50 --repeat 3       # the reference comparison (quiet machine)
    python bench/run_bench.py --tiny-sdxl           # the tiny SDXL-layout model
    python bench/run_bench.py --tiny-sd3 --steps 8  # the tiny SD3 / Qwen-Image models (flow matching; --tiny-qwen-image)
    python bench/run_bench.py --random-unet sd15    # full-size random-weight SD 1.5 UNet on the GPU, 512 px
    python bench/run_bench.py --random-unet sd35m --model-dtype bf16   # random SD3.5 Medium on the GPU, 1024 px
    python bench/run_bench.py --checkpoint /path/v1-5-pruned-emaonly.safetensors --image photo.jpg

Prints one table (UNet forward evaluations and backward passes per phase, inner iterations, wall time, CPU
utilisation, peak memory, reconstruction latent MSE and decoded PSNR) and writes it as JSON (--json, rewritten after
every phase) and optionally as markdown (--markdown).

For the flow-matching families (SD3/SD3.5, Qwen-Image; bench/flow_phases.py) there is no reference peer (the
authors' code is DDIM on SD): each row reports its model calls per step against the floor of its algorithm
(null-text: 1 conditional + k forward/backward + 1 unconditional evaluation per step).

The peer is the authors' NullInversion (bench/reference_nti.py, the notebook's null_optimization with only the model
call adapted), run on the same model and inputs twice: with the model's weights frozen (requires_grad False: the
headline peer, the fair comparison of the algorithm) and as published (weights requiring grad, as a diffusers UNet
has them, so every backward also computes all weight gradients).

CPU utilisation of a timed run = process CPU time (user + system of all the process's threads, time.process_time)
/ (wall time x T), T = min(torch.get_num_threads(), CPUs this process may run on). A compute-bound run on an idle
machine reads 0.95-1.00; other processes competing for the cores lower it, and they slow the two implementations by
different amounts (the weight-gradient path far more), so on a CPU the script refuses to report wall-time ratios
when any timed run of a compared phase reads below 0.9 (it prints which). On a GPU the check does not apply (the
CPU waits for the device) and is not made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]  # the repo's nodes/ shadows the host's

# The bench's modules (bench/): measure.py (timing, counts, memory), report.py (agreement, ratios, targets, JSON and
# markdown), workload.py (host, model, inputs), and, imported once the host is set up, reference_peer.py (the
# authors' code on our model) and phases.py (the phases). The report names are re-exported here for
# tests/test_bench_tools.py and bench/gpu.sh.
from report import (  # noqa: E402,F401
    ITERATION_FLIP_TOLERANCE, MIN_CPU_UTIL, OURS, RECON_TOLERANCE, REF_FROZEN, REF_PUBLISHED, compare, complete_report,
    machine_info, new_report, publish_report, ratio_section, render_markdown, settings_section, targets_section,
)
from workload import (  # noqa: E402
    MODEL_DTYPES, RANDOM_MMDITS, build_workload, flow_family, resolve_settings, set_flush_denormal, start_host,
)

ALL_PHASES = ("plain", "reference", "published", "options", "memory_saving", "reference_memory_saving", "precision",
              "fast", "edit")
DEFAULT_PHASES = tuple(p for p in ALL_PHASES if p != "reference_memory_saving")
#: The groups the flow-matching families run (the reference peers are SD-only).
FLOW_PHASES = ("plain", "options", "memory_saving", "precision", "fast", "edit")


def build_parser() -> argparse.ArgumentParser:
    """The command line (``--help`` shows this module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", help="ComfyUI checkout (default: COMFYUI_PATH, then ~/ComfyUI)")
    parser.add_argument("--checkpoint", help="an SD 1.x/2.x or SDXL checkpoint; default: the tiny random test model")
    parser.add_argument("--tiny-sdxl", action="store_true",
                        help="use the tiny random SDXL-layout test model (tests/tiny_sdxl.py) instead of the SD 1.x one")
    parser.add_argument("--tiny-sd3", action="store_true",
                        help="use the tiny random SD3-layout test model (tests/tiny_sd3.py; flow matching, no reference peer)")
    parser.add_argument("--tiny-qwen-image", action="store_true",
                        help="use the tiny random Qwen-Image-layout test model (tests/tiny_qwen_image.py; flow matching)")
    parser.add_argument("--random-unet", choices=["sd15", "sdxl", *RANDOM_MMDITS],
                        help="a random-weight UNet built with the host's classes directly on the device (bench/random_unet.py): "
                             "full-size SD 1.5 (860 M) or SDXL (2.6 B), with a random-weight CLIP of the family for the prompts "
                             "and a synthetic latent, no VAE (so no PSNR); or a random-weight flow transformer "
                             "(bench/random_mmdit.py): SD3.5 Medium (2.24 B) or Qwen-Image (20.4 B at 60 blocks) with random "
                             "text conditioning of the real shapes. Uses the GPU when there is one")
    parser.add_argument("--random-scale", choices=["full", "tiny"], default="full",
                        help="with --random-unet: the real size (default) or the same layout narrow (CPU checks of bench/gpu.sh)")
    parser.add_argument("--random-layers", type=int, default=None,
                        help="with --random-unet qwen-image: its number of blocks (default: 60 on a GPU with 100 GiB or "
                             "more, else 30; full width either way)")
    parser.add_argument("--model-dtype", choices=sorted(MODEL_DTYPES), default=None,
                        help="flow models only: the main model's dtype (default fp32; the embedding and Adam stay fp32)")
    parser.add_argument("--image", help="an image file; default: a synthetic image (tiny and random models: a synthetic latent)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in px (default 512, SDXL, SD3.5 and Qwen-Image 1024; tiny models 64 for SD 1.x, "
                             "128 for SDXL, SD3 and Qwen-Image; --random-scale tiny 128)")
    parser.add_argument("--steps", type=int, default=None,
                        help="DDIM steps (default 50, the paper's); flow models: Euler steps (default SD3.5 28, Qwen-Image 30)")
    parser.add_argument("--inner", type=int, default=10, help="inner iterations (default 10)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="default 7.5 (SD); the family's for the flow models (SD3.5 4.5, Qwen-Image 4.0)")
    parser.add_argument("--cpu", action="store_true", help="force the CPU")
    parser.add_argument("--phases", default=",".join(DEFAULT_PHASES),
                        help="comma-separated phase groups to run besides the inversion and ours (default: %(default)s). "
                             f"All: {', '.join(ALL_PHASES)}. 'reference' is the frozen-weight reference (the headline peer), "
                             "'published' the reference with weight gradients, 'reference_memory_saving' the frozen "
                             "reference under the same gradient checkpointing as ours with memory_saving, 'precision' the "
                             "--precision runs (ours and, with 'reference', the frozen reference), 'fast' negative-prompt "
                             "inversion and Direct Inversion with batch-1 and batch-2 calls")
    parser.add_argument("--skip", default="", help="comma-separated phase groups to leave out of --phases")
    parser.add_argument("--skip-reference", action="store_true", help="leave out both reference runs")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time ours and the references this many times each, in alternating order, and report the "
                             "medians and the per-pair ratios (CPU timings vary by ~10%% from run to run)")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="flush denormal floats to zero on the CPU (torch.set_flush_denormal), to check whether "
                             "denormal arithmetic affects CPU timings (it made no clear difference on the tiny model)")
    parser.add_argument("--precision", action="append", default=[], choices=["fp16", "bf16"],
                        help="also run null-text with the model in this dtype (embedding stays fp32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random models and conditions")
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "latest.json"))
    parser.add_argument("--markdown", help="also write the table and comparisons as markdown here")
    return parser


def phases_to_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> set[str]:
    """The phase groups of ``--phases`` less ``--skip`` (and ``--skip-reference``); exits on an unknown group or on
    more than one model option."""
    phases = {p.strip() for p in args.phases.split(",") if p.strip()} - {p.strip() for p in args.skip.split(",")}
    unknown = phases - set(ALL_PHASES)
    if unknown:
        parser.error(f"unknown phase group(s) {sorted(unknown)}; choose from {', '.join(ALL_PHASES)}")
    if args.skip_reference:
        phases -= {"reference", "published", "reference_memory_saving"}
    if sum(bool(x) for x in (args.checkpoint, args.tiny_sdxl, args.tiny_sd3, args.tiny_qwen_image, args.random_unet)) > 1:
        parser.error("choose one of --checkpoint, --tiny-sdxl, --tiny-sd3, --tiny-qwen-image, --random-unet")
    if flow_family(args) is None:
        if args.model_dtype is not None:
            parser.error("--model-dtype is for the flow models (--tiny-sd3, --tiny-qwen-image, --random-unet sd35m/qwen-image)")
    else:
        dropped = phases - set(FLOW_PHASES)
        if dropped:
            print(f"bench: {flow_family(args)}: no reference peer (the authors' code is DDIM on SD); "
                  f"leaving out {', '.join(sorted(dropped))}")
        phases &= set(FLOW_PHASES)
    if args.random_layers is not None and args.random_unet != "qwen-image":
        parser.error("--random-layers is for --random-unet qwen-image")
    return phases


def main(argv: Optional[list[str]] = None) -> int:
    """Parse the command line, set up the host and the model, run the phases, and write and print the report."""
    parser = build_parser()
    args = parser.parse_args(argv)
    phase_groups = phases_to_run(args, parser)
    host = start_host(args)
    run(args, host, phase_groups)
    return 0


def run(args: argparse.Namespace, host, phase_groups: set[str]) -> dict:
    """Everything after the host is set up: settings, model and inputs, the phases, the report (returned)."""
    from phases import Bench  # imports the pack, importable only now

    settings = resolve_settings(args, host)
    set_flush_denormal(args)
    workload = build_workload(settings)
    report = new_report(machine_info(host, settings.device), settings_section(settings, workload, phase_groups))
    if flow_family(args) is not None:
        from flow_phases import FlowBench

        bench = FlowBench(settings, workload, phase_groups, report)
    else:
        bench = Bench(settings, workload, phase_groups, report)
    bench.run()
    complete_report(report, bench.ratio_pairs, settings.on_cpu)
    publish_report(report, args.json, args.markdown)
    return report


if __name__ == "__main__":
    sys.exit(main())
