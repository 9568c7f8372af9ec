"""Benchmark: the cost and quality of DDIM inversion, null-text optimisation, fast modes and an edit.

    python bench/run_bench.py                       # tiny random model on CPU, 50 steps at 64 px (2 cores)
    python bench/run_bench.py --size 128 --steps 50 --repeat 3       # the reference comparison (quiet machine)
    python bench/run_bench.py --tiny-sdxl           # the tiny SDXL-layout model
    python bench/run_bench.py --random-unet sd15    # full-size random-weight SD 1.5 UNet on the GPU, 512 px
    python bench/run_bench.py --checkpoint /path/v1-5-pruned-emaonly.safetensors --image photo.jpg

Prints one table (UNet forward evaluations and backward passes per phase, inner iterations, wall time, CPU
utilisation, peak memory, reconstruction latent MSE and decoded PSNR) and writes it as JSON (--json, rewritten after
every phase) and optionally as markdown (--markdown).

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
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Callable, Optional
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]  # the repo's nodes/ shadows the host's

#: Below this CPU utilisation a timed CPU run does not measure this code (see the module docstring).
MIN_CPU_UTIL = 0.9

#: Results equal to the reference: reconstruction latent max |diff| at most this fraction of the reconstruction's
#: largest element (float32 rounding grows along the trajectory under guidance 7.5: measured 1e-4-4e-3 on the tiny
#: and random models; a wrong step or context gives order 1) ...
RECON_TOLERANCE = 1e-2
#: ... and the inner-iteration count differing (by one) at no more than this fraction of the steps: a step's float32
#: loss can lie within rounding of the early-stop threshold, and the two implementations then stop one apart.
ITERATION_FLIP_TOLERANCE = 0.1

ALL_PHASES = ("plain", "reference", "published", "options", "memory_saving", "reference_memory_saving", "precision",
              "fast", "edit")
DEFAULT_PHASES = tuple(p for p in ALL_PHASES if p != "reference_memory_saving")

OURS = "null-text (ours, default)"
REF_FROZEN = "null-text (reference, weights frozen)"
REF_PUBLISHED = "null-text (reference as published, weight grads)"


def import_pack():
    """The repo as package ``nulltext_p2p`` (a symlink in a temp dir), without the repo root on sys.path."""
    link_dir = tempfile.mkdtemp(prefix="ntp_bench_")
    os.symlink(REPO, os.path.join(link_dir, "nulltext_p2p"), target_is_directory=True)
    sys.path.insert(0, link_dir)
    sys.path.insert(0, str(REPO / "tests"))  # tiny_model, helpers
    sys.path.insert(0, str(REPO / "bench"))  # reference_nti, random_unet
    __import__("nulltext_p2p")


class Counter:
    """Counts UNet forward calls, evaluated rows and backward passes through the UNet."""

    def __init__(self, unet) -> None:
        self.forwards = self.rows = self.backwards = 0
        unet.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.forwards += 1
        self.rows += int(output.shape[0])
        if output.requires_grad:
            output.register_hook(self._count_backward)

    def _count_backward(self, grad) -> None:
        self.backwards += 1

    def snapshot(self) -> tuple[int, int, int]:
        return self.forwards, self.rows, self.backwards


class PeakMemory:
    """Peak process RSS and GPU allocator peak during a block.

    On Linux the kernel's own high-water mark is reset before the block (``/proc/self/clear_refs``) and read after
    it, so nothing runs alongside the timed code. Elsewhere a thread samples RSS every 50 ms (it competes for the
    cores, so timings taken that way read a little high).
    """

    def __init__(self, torch) -> None:
        self.torch = torch

    @staticmethod
    def _hwm_bytes() -> Optional[int]:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @contextmanager
    def measure(self, out: dict):
        cuda = self.torch.cuda.is_available()
        if cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            out["gpu_start_mib"] = round(self.torch.cuda.memory_allocated() / 2 ** 20, 1)
        kernel = self._hwm_bytes() is not None and self._reset_hwm()
        stop = threading.Event()
        peak = [0]
        thread = None
        if not kernel:
            import psutil

            proc = psutil.Process()
            peak[0] = proc.memory_info().rss

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], proc.memory_info().rss)
                    stop.wait(0.05)

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
        try:
            yield
        finally:
            if thread is not None:
                stop.set()
                thread.join()
            else:
                peak[0] = self._hwm_bytes() or 0
            out["peak_rss_mib"] = round(peak[0] / 2 ** 20, 1)
            if cuda:
                out["peak_gpu_mib"] = round(self.torch.cuda.max_memory_allocated() / 2 ** 20, 1)


def cpu_threads() -> int:
    """The T of the CPU-utilisation definition: torch's intra-op threads, at most the CPUs this process may use."""
    import torch

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cpus))


def timed(fn: Callable, cuda: bool):
    """(result, wall seconds, CPU utilisation) of ``fn()``; on CUDA the device is synchronised before both clocks."""
    import torch

    if cuda:
        torch.cuda.synchronize()
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return result, round(wall, 3), round(cpu / (wall * cpu_threads()), 3) if wall > 0 else None


@contextmanager
def weights_require_grad(module, flag: bool = True):
    """Every weight of ``module`` requires grad (``flag`` True: a diffusers UNet's setting, the reference as published)
    or not (False: frozen) inside the block; afterwards the flags are as before and any gradients are dropped."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(flag)
        yield
    finally:
        for p, old in flags:
            p.requires_grad_(old)
            p.grad = None


def warm_up(model, source, null, latent, guidance: float, weight_grads: bool = True) -> None:
    """One untimed pass of every kind of work, so no timed phase pays first-call costs (allocator pools, kernel
    selection): a 2-step inversion, null-text for 2 steps x 2 iterations, Direct Inversion both ways (batch-1 and
    batch-2 calls), and a forward+backward with weight gradients as the published reference runs it."""
    import torch
    from nulltext_p2p.host.text_condition import text_condition
    from nulltext_p2p.host.unet import HostUNet
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    with torch.inference_mode():
        inv = run_inversion(model, source, latent, 2)
        run_null_text(model, source, null, inv, guidance, 2, 0.0)
        for pairs in (False, True):
            run_fast_inversion(model, source, null, inv, "direct-inversion", guidance, batch_pairs=pairs)
    if weight_grads:
        diffusion = model.model.diffusion_model
        unet = HostUNet(model)
        with weights_require_grad(diffusion):
            x = inv.latents[-1].to(model.load_device).clone()
            ctx = text_condition(model, source, "bench", "source").to(x.device).clone()
            raw_unet(model, unet)(x, 500, ctx).float().pow(2).mean().backward()
    print("bench: warm-up done (untimed)", flush=True)


def raw_unet(model, host_unet):
    """The reference's model call: the raw diffusion model (no host wrappers), eps for DDPM-scaled ``x`` at integer
    timestep ``t``. Inputs are cast to the model's compute dtype and the output to float32, as the host's
    ``apply_model`` does, so the reference's embedding and Adam stay float32 for a float16/bfloat16 model too. For
    SDXL the context is packed (``host.text_condition``: token rows + a pooled row) and the pooled vector enters the
    ADM input ``y`` exactly as in ours (``HostUNet.adm``), so the reference optimises the same tensor."""
    import torch
    from nulltext_p2p.host.text_condition import unpack

    diffusion = model.model.diffusion_model
    dtype = host_unet.dtype
    dim = host_unet.pooled_dim

    def call(x, t, ctx):
        b = x.shape[0]
        tokens, pooled = unpack(ctx, dim)
        if tokens.shape[0] != b:
            tokens = tokens.expand(b, -1, -1)
        kw = {}
        if pooled is not None:
            kw["y"] = host_unet.adm(pooled.expand(b, -1) if pooled.shape[0] != b else pooled, x).to(dtype)
        tt = torch.full((b,), float(t), device=x.device, dtype=torch.float32)
        return diffusion(x.to(dtype), timesteps=tt, context=tokens.to(dtype), **kw).float()

    return call


def time_pairs(rows: list, fns: dict, repeat: int, cuda: bool) -> None:
    """Run each of ``fns`` (phase name -> callable) ``repeat - 1`` more times, alternating the order (forward, then
    backward), and set its row's ``wall_s`` to the median of all its runs (``wall_runs`` and ``cpu_util_runs`` keep
    every run; run k of each phase belongs to pair k)."""
    by_name = {r["phase"]: r for r in rows}
    names = [n for n in fns if n in by_name]
    runs = {n: [by_name[n]["wall_s"]] for n in names}
    utils = {n: [by_name[n].get("cpu_util")] for n in names}
    for k in range(1, repeat):
        for name in (names[::-1] if k % 2 else names):
            _, wall, util = timed(fns[name], cuda)
            runs[name].append(wall)
            utils[name].append(util)
            print(f"  {name:<52} {wall:8.2f} s  cpu util {util}  (repeat {k + 1}/{repeat})", flush=True)
    for name in names:
        by_name[name]["wall_runs"] = runs[name]
        by_name[name]["cpu_util_runs"] = utils[name]
        by_name[name]["wall_s"] = round(statistics.median(runs[name]), 3)


def psnr(a, b) -> float:
    mse = float(((a.detach().double() - b.detach().double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def compare(ours: dict, ref: dict) -> dict:
    """Ours against a reference run: embedding and reconstruction differences, iteration counts, tolerance."""
    import torch

    delta = ours["value"].embeddings.to(ref["embs"].device) - ref["embs"]
    it_o, it_r = list(ours["iterations"]), list(ref["iterations"])
    equal_steps = sum(a == b for a, b in zip(it_o, it_r))
    flips_ok = all(abs(a - b) <= 1 for a, b in zip(it_o, it_r)) and \
        (len(it_o) - equal_steps) <= ITERATION_FLIP_TOLERANCE * len(it_o)
    recon = float((ours["recon"].cpu().float() - ref["recon"].cpu().float()).abs().max())
    recon_rel = recon / max(float(ours["recon"].cpu().float().abs().max()), 1e-12)
    return {
        "max_embedding_diff_vs_ours": float(delta.abs().max()),
        "rms_embedding_diff_vs_ours": float(delta.pow(2).mean().sqrt()),
        "recon_diff_vs_ours": recon,
        "recon_rel_diff_vs_ours": recon_rel,
        "iterations_equal": it_o == it_r,
        "steps_with_equal_iterations": f"{equal_steps}/{len(it_o)}",
        "iterations_total": {"ours": int(sum(it_o)), "reference": int(sum(it_r))},
        "results_equal_within_tolerance": bool(recon_rel <= RECON_TOLERANCE and flips_ok and torch.isfinite(delta).all()),
    }


def ratio_section(rows: list, pairs: list, on_cpu: bool) -> dict:
    """Wall-time ratios ours / reference for ``pairs`` [(ours phase, reference phase, label)], with per-pair ratios,
    or the reason they are withheld (CPU runs below MIN_CPU_UTIL)."""
    by_name = {r["phase"]: r for r in rows}
    pairs = [(o, r, label) for o, r, label in pairs if o in by_name and r in by_name]
    if not pairs:
        return {}
    if on_cpu:
        low = []
        for o, r, _ in pairs:
            for name in (o, r):
                for k, u in enumerate(by_name[name].get("cpu_util_runs") or [by_name[name].get("cpu_util")]):
                    if u is None or u < MIN_CPU_UTIL:
                        low.append(f"{name} run {k + 1}: {u}")
        if low:
            return {"withheld": True, "reason": (
                f"CPU utilisation below {MIN_CPU_UTIL} in {len(low)} timed run(s) ({'; '.join(sorted(set(low)))}): "
                "other processes competed for the cores, and they slow ours and the reference by different amounts, "
                "so these wall times do not compare the two implementations. Rerun on an idle machine.")}
    out = {"withheld": False, "utilisation_checked": on_cpu, "ratios": {}}
    for o, r, label in pairs:
        ro, rr = by_name[o], by_name[r]
        entry = {"ours": o, "reference": r, "median_ratio": round(ro["wall_s"] / rr["wall_s"], 3)}
        wo, wr = ro.get("wall_runs"), rr.get("wall_runs")
        if wo and wr and len(wo) == len(wr):
            entry["pair_ratios"] = [round(a / b, 3) for a, b in zip(wo, wr)]
        out["ratios"][label] = entry
    return out


def targets_section(report: dict) -> dict:
    """The issue's targets that apply to this run (checked only where ratios were reported)."""
    s, by_name = report["settings"], {r["phase"]: r for r in report["phases"]}
    ratios = report.get("ratios", {})
    frozen = (ratios.get("ratios") or {}).get("ours / reference (weights frozen)", {}).get("median_ratio")
    equal = (by_name.get(REF_FROZEN) or {}).get("results_equal_within_tolerance")
    out = {}
    if s["device"] == "cpu" and s["checkpoint"] == "tiny" and s["inner"] == 10 and s["steps"] in (10, 50):
        limit = 0.87 if s["steps"] == 50 else 0.95
        out["cpu_no_regression"] = {"limit_ratio_vs_frozen": limit, "ratio": frozen, "results_equal": equal,
                                    "met": None if frozen is None else bool(frozen <= limit and equal)}
    if s["device"].startswith("cuda") and s["checkpoint"] == "random-sd15-full" and s["size"] == 512 \
            and s["steps"] == 50 and s["inner"] == 10:
        ours = by_name.get(OURS, {})
        peak = ours.get("peak_gpu_mib")
        out["gpu_sd15_512"] = {
            "ours_wall_s": ours.get("wall_s"), "limit_s": 20.0,
            "peak_gpu_gb": None if peak is None else round(peak * 2 ** 20 / 1e9, 2), "limit_gb": 6.0,
            "ratio_vs_frozen": frozen, "limit_ratio": 0.8, "results_equal": equal,
            "met": bool(ours.get("wall_s", 1e9) < 20.0 and peak is not None and peak * 2 ** 20 < 6e9
                        and frozen is not None and frozen <= 0.8 and equal),
        }
    return out


COLS = ["phase", "wall_s", "cpu_util", "unet_evals", "unet_calls", "backward", "inner_iterations", "peak_rss_mib",
        "peak_gpu_mib", "latent_mse", "psnr_db"]


def render_markdown(report: dict) -> str:
    s = report["settings"]
    lines = [f"### {s['checkpoint']}: {s['steps']} steps, {s['size']} px, inner {s['inner']}, guidance {s['guidance']}, "
             f"device {s['device']}" + (f" ({report['machine']['device_name']})" if report["machine"].get("device_name") else ""), ""]
    lines.append("| " + " | ".join(COLS) + " |")
    lines.append("|" + "---|" * len(COLS))
    for r in report["phases"]:
        cells = []
        for c in COLS:
            v = r.get(c, "")
            if c == "latent_mse" and v != "":
                v = f"{v:.3e}"
            elif c == "wall_s" and r.get("wall_runs"):
                v = f"{v} ({' / '.join(str(w) for w in r['wall_runs'])})"
            elif c == "cpu_util" and r.get("cpu_util_runs"):
                v = " / ".join(str(u) for u in r["cpu_util_runs"])
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in report["phases"]:
        if "results_equal_within_tolerance" in r:
            lines.append(f"- {r['phase']} vs ours: embeddings max |diff| {r['max_embedding_diff_vs_ours']:.2e} (rms "
                         f"{r['rms_embedding_diff_vs_ours']:.2e}), reconstruction max |diff| {r['recon_diff_vs_ours']:.2e} "
                         f"({r.get('recon_rel_diff_vs_ours', float('nan')):.1e} of its largest element), "
                         f"steps with equal iterations {r['steps_with_equal_iterations']}, equal within tolerance: "
                         f"{r['results_equal_within_tolerance']}")
    ratios = report.get("ratios") or {}
    if ratios.get("withheld"):
        lines.append(f"- **ratios withheld**: {ratios['reason']}")
    for label, e in (ratios.get("ratios") or {}).items():
        pr = f" (pairs {', '.join(str(x) for x in e['pair_ratios'])})" if e.get("pair_ratios") else ""
        lines.append(f"- {label}: **{e['median_ratio']}x**{pr}")
    if ratios and not ratios.get("withheld") and not ratios.get("utilisation_checked"):
        lines.append("- (GPU run: CPU utilisation not checked)")
    for name, t in (report.get("targets") or {}).items():
        lines.append(f"- target {name}: {json.dumps(t)}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", help="ComfyUI checkout (default: COMFYUI_PATH, then ~/ComfyUI)")
    ap.add_argument("--checkpoint", help="an SD 1.x/2.x or SDXL checkpoint; default: the tiny random test model")
    ap.add_argument("--tiny-sdxl", action="store_true",
                    help="use the tiny random SDXL-layout test model (tests/tiny_sdxl.py) instead of the SD 1.x one")
    ap.add_argument("--random-unet", choices=["sd15", "sdxl"],
                    help="a random-weight UNet built with the host's classes directly on the device (bench/random_unet.py): "
                         "full-size SD 1.5 (860 M) or SDXL (2.6 B), with a random-weight CLIP of the family for the prompts "
                         "and a synthetic latent, no VAE (so no PSNR). Uses the GPU when there is one")
    ap.add_argument("--random-scale", choices=["full", "tiny"], default="full",
                    help="with --random-unet: the real size (default) or the same layout narrow (CPU checks of bench/gpu.sh)")
    ap.add_argument("--image", help="an image file; default: a synthetic image (tiny and random models: a synthetic latent)")
    ap.add_argument("--size", type=int, default=None,
                    help="image side in px (default 512, SDXL 1024; tiny models 64 for SD 1.x, 128 for SDXL; "
                         "--random-scale tiny 128)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default 50, the paper's)")
    ap.add_argument("--inner", type=int, default=10, help="inner iterations (default 10)")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--cpu", action="store_true", help="force the CPU")
    ap.add_argument("--phases", default=",".join(DEFAULT_PHASES),
                    help="comma-separated phase groups to run besides the inversion and ours (default: %(default)s). "
                         f"All: {', '.join(ALL_PHASES)}. 'reference' is the frozen-weight reference (the headline peer), "
                         "'published' the reference with weight gradients, 'reference_memory_saving' the frozen "
                         "reference under the same gradient checkpointing as ours with memory_saving, 'precision' the "
                         "--precision runs (ours and, with 'reference', the frozen reference), 'fast' negative-prompt "
                         "inversion and Direct Inversion with batch-1 and batch-2 calls")
    ap.add_argument("--skip", default="", help="comma-separated phase groups to leave out of --phases")
    ap.add_argument("--skip-reference", action="store_true", help="leave out both reference runs")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time ours and the references this many times each, in alternating order, and report the "
                         "medians and the per-pair ratios (CPU timings vary by ~10%% from run to run)")
    ap.add_argument("--flush-denormal", action="store_true",
                    help="flush denormal floats to zero on the CPU (torch.set_flush_denormal), to check whether "
                         "denormal arithmetic affects CPU timings (it made no clear difference on the tiny model)")
    ap.add_argument("--precision", action="append", default=[], choices=["fp16", "bf16"],
                    help="also run null-text with the model in this dtype (embedding stays fp32)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random models and conditions")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "latest.json"))
    ap.add_argument("--markdown", help="also write the table and comparisons as markdown here")
    args = ap.parse_args(argv)
    phases = {p.strip() for p in args.phases.split(",") if p.strip()} - {p.strip() for p in args.skip.split(",")}
    unknown = phases - set(ALL_PHASES)
    if unknown:
        ap.error(f"unknown phase group(s) {sorted(unknown)}; choose from {', '.join(ALL_PHASES)}")
    if args.skip_reference:
        phases -= {"reference", "published", "reference_memory_saving"}
    if sum(bool(x) for x in (args.checkpoint, args.tiny_sdxl, args.random_unet)) > 1:
        ap.error("choose one of --checkpoint, --tiny-sdxl, --random-unet")

    sys.path.insert(0, str(REPO))
    from runner.host import find_comfyui, setup_host  # noqa: E402

    random_mode = args.random_unet is not None
    tiny = args.checkpoint is None and not random_mode  # the tiny SD 1.x checkpoint or the tiny SDXL model
    sys.path.insert(0, str(REPO / "tests"))
    from torchvision_placeholder import install_torchvision_placeholder

    if install_torchvision_placeholder():
        print("bench: torchvision unusable here, placeholder installed (SD 1.x/SDXL UNets never use it)")
    import torch

    no_gpu = random_mode and not torch.cuda.is_available()  # the tiny models always run on the CPU
    if no_gpu and not args.cpu:
        print("bench: no CUDA GPU: the random UNet is built on the CPU")
    host = setup_host(find_comfyui(args.comfyui), cpu=args.cpu or tiny or no_gpu)
    if str(REPO) in sys.path:
        sys.path.remove(str(REPO))
    import_pack()

    from helpers import encode, image_latent, make_test_image  # tests/helpers.py
    from nulltext_p2p.core.ddim import ddim_sample
    from nulltext_p2p.host.text_condition import text_condition
    from nulltext_p2p.host.unet import HostUNet, alphas_cumprod, check_model_family, recomputed_transformers
    from nulltext_p2p.nodes.attention_controller import build_control
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text
    import comfy.sd

    comfy_mm = host.model_management
    device = comfy_mm.get_torch_device()
    cuda = torch.device(device).type == "cuda"
    on_cpu = torch.device(device).type == "cpu"
    steps = args.steps or 50
    if random_mode:
        default_size = 128 if args.random_scale == "tiny" else (1024 if args.random_unet == "sdxl" else 512)
    else:
        default_size = (128 if args.tiny_sdxl else 64) if tiny else 512
    size = args.size or default_size
    ckpt = args.checkpoint
    if tiny and not args.tiny_sdxl:
        from tiny_model import build_tiny_sd15_checkpoint

        ckpt = build_tiny_sd15_checkpoint(os.path.join(tempfile.mkdtemp(prefix="ntp_bench_ckpt_"), "tiny.safetensors"))

    def load(dtype=None):
        """(MODEL, CLIP, VAE) in ``dtype`` (None: the host's choice; random models: float32)."""
        if random_mode:
            from random_unet import build_random_model, random_clip

            m = build_random_model(args.random_unet, device, dtype or torch.float32, args.seed, args.random_scale)
            return m, (random_clip(m, args.seed) if dtype is None else None), None
        if args.tiny_sdxl:
            from tiny_sdxl import build_tiny_sdxl

            return build_tiny_sdxl(dtype=dtype or torch.float32)
        opts = {} if dtype is None else {"dtype": dtype}
        return comfy.sd.load_checkpoint_guess_config(ckpt, output_vae=True, output_clip=True,
                                                     embedding_directory=None, model_options=opts)[:3]

    if args.flush_denormal and not torch.set_flush_denormal(True):
        print("bench: this CPU cannot flush denormals; timings as without --flush-denormal")
    model, clip, vae = load()
    family = check_model_family(model, "bench")
    if random_mode:
        from random_unet import unet_parameters

        model_name = f"random-{args.random_unet}-{args.random_scale}"
        print(f"bench: {model_name}: {unet_parameters(model) / 1e6:.1f} M UNet parameters ({family}), built on {device}")
    else:
        model_name = "tiny-sdxl" if args.tiny_sdxl else ("tiny" if tiny else ckpt)
    source_text, target_text = "a cat sitting on a table", "a tiger sitting on a table"
    if clip is not None:
        source, null = encode(clip, source_text), encode(clip, "")
    if args.image:
        from PIL import Image
        import numpy as np

        im = Image.open(args.image).convert("RGB").resize((size, size), Image.LANCZOS)
        image = torch.from_numpy(np.asarray(im).astype("float32") / 255.0)[None]
    else:
        image = make_test_image(size, size)
    synthetic_latent = (tiny or random_mode) and not args.image
    latent = image_latent(model, size // 8, size // 8, seed=args.seed) if synthetic_latent else {"samples": vae.encode(image)}

    comfy_mm.load_models_gpu([model])
    counters = [Counter(model.model.diffusion_model)]

    def snapshot() -> tuple[int, int, int]:
        return tuple(sum(c.snapshot()[k] for c in counters) for k in range(3))
    mem = PeakMemory(torch)
    rows: list[dict] = []
    state: dict = {}
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "cpu_threads_T": cpu_threads(), "torch": torch.__version__,
               "comfyui": str(host.path), "device": str(device)}
    if cuda:
        machine["device_name"] = torch.cuda.get_device_name(device)
    report = {
        "machine": machine,
        "settings": {"steps": steps, "size": size, "inner": args.inner, "guidance": args.guidance,
                     "flush_denormal": bool(args.flush_denormal), "repeat": args.repeat, "checkpoint": model_name,
                     "family": family, "device": str(device), "phases": sorted(phases), "precision": args.precision,
                     "min_cpu_util": MIN_CPU_UTIL},
        "phases": rows,
        "partial": True,
    }

    def write_report() -> None:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2, default=str)
        os.replace(tmp, args.json)

    def decode_psnr(z_model) -> Optional[float]:
        if vae is None:
            return None
        img = vae.decode(model.model.process_latent_out(z_model.to(torch.float32)))
        ref = vae.decode(latent["samples"]) if synthetic_latent else image
        return round(psnr(img[..., :3].cpu().clamp(0, 1), ref[..., :3].cpu().clamp(0, 1)), 2)

    def record_reconstruction(row: dict, rec, z0) -> None:
        """The row's latent MSE against z0 and, with a VAE, the decoded PSNR."""
        row["latent_mse"] = float(((rec.double().cpu() - z0.double().cpu()) ** 2).mean())
        p = decode_psnr(rec)
        if p is not None:
            row["psnr_db"] = p

    def phase(name: str, fn, z0=None, note: str = ""):
        row = {"phase": name, "note": note}
        f0, r0, b0 = snapshot()
        with mem.measure(row):
            result, row["wall_s"], row["cpu_util"] = timed(fn, cuda)
        f1, r1, b1 = snapshot()
        row.update(unet_calls=f1 - f0, unet_evals=r1 - r0, backward=b1 - b0)
        rec = result.get("recon") if isinstance(result, dict) else None
        if rec is not None and z0 is not None:
            record_reconstruction(row, rec, z0)
        if isinstance(result, dict) and "iterations" in result:
            row["inner_iterations"] = int(sum(result["iterations"]))
        rows.append(row)
        gpu = f"  gpu peak {row['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in row else ""
        print(f"  {name:<52} {row['wall_s']:8.2f} s  cpu util {row['cpu_util']}  evals {row['unet_evals']:5d}  "
              f"calls {row['unet_calls']:5d}  backward {row['backward']:5d}{gpu}", flush=True)
        write_report()
        return result

    print(f"bench: {steps} steps, {size}px, inner {args.inner}, guidance {args.guidance}, device {device}, "
          f"checkpoint {model_name}, phases {','.join(sorted(phases))}", flush=True)
    warm_up(model, source, null, latent, args.guidance, weight_grads="published" in phases)
    inv = phase("ddim inversion", lambda: {"inv": run_inversion(model, source, latent, steps)})["inv"]
    z0 = inv.latents[0]
    unet = HostUNet(model)
    source_c, null_c = (text_condition(model, c, "bench", n) for c, n in ((source, "source"), (null, "null")))
    plain_nulls = null_c.unsqueeze(0).expand(steps, *null_c.shape)

    if "plain" in phases:
        def plain():
            with torch.no_grad():
                return {"recon": ddim_sample(lambda x, t, c: unet.eps(x, t, c), inv.schedule, inv.x_T, source_c,
                                             plain_nulls, args.guidance,
                                             eps_pair_fn=unet.eps_pair)}

        phase("plain DDIM @ guidance (no NTI)", plain, z0, "reconstruction without null-text")

    def inversion_for(m):
        """The inversion made with ``m`` (a model loaded in another dtype can have another fingerprint: the nodes
        then refuse the fp32 inversion, so it gets its own, made outside the timed phase)."""
        from nulltext_p2p.host.model_fingerprint import model_fingerprint

        if m is model or model_fingerprint(m) == inv.model_fingerprint:
            return inv
        if id(m) not in state:
            with torch.inference_mode():
                state[id(m)] = run_inversion(m, source, latent, steps)
        return state[id(m)]

    def ours(inner=args.inner, eps=1e-5, m=model, m_inv=None, memory_saving=False):
        with torch.inference_mode():  # as ComfyUI runs nodes
            value, final = run_null_text(m, source, null, m_inv or inv, args.guidance, inner, eps,
                                         memory_saving=memory_saving)
        return {"recon": final, "iterations": value.iterations, "value": value}

    def reference(m=model, m_inv=None, frozen=True, memory_saving=False):
        """The authors' null_optimization on ``m`` (see raw_unet), weights frozen or requiring grad."""
        from reference_nti import ReferenceNullInversion

        diffusion = m.model.diffusion_model
        host_unet = HostUNet(m)
        src, nul = (text_condition(m, c, "bench", n) for c, n in ((source, "source"), (null, "null")))
        traj_inv = m_inv or inv

        def run():
            with weights_require_grad(diffusion, not frozen), recomputed_transformers(diffusion, memory_saving):
                ref = ReferenceNullInversion(raw_unet(m, host_unet), alphas_cumprod(m), steps, args.guidance)
                dev = m.load_device
                traj = [z.to(dev).clone() for z in traj_inv.latents]  # (an inversion made under inference mode)
                embs, iters, final = ref.null_optimization(traj, nul.to(dev, torch.float32),
                                                           src.to(dev, torch.float32), args.inner, 1e-5)
                return {"recon": final.detach(), "iterations": iters, "embs": torch.stack(embs)}
        return run

    def compared(name, result, ours_result):
        row = next(r for r in rows if r["phase"] == name)
        row.update(compare(ours_result, result))
        write_report()

    r_ours = phase(OURS, ours, z0, "reference semantics")
    timed_fns = {OURS: ours}
    ratio_pairs = []
    if "reference" in phases:
        fn = reference(frozen=True)
        compared(REF_FROZEN, phase(REF_FROZEN, fn, z0, "headline peer: weights requires_grad False"), r_ours)
        timed_fns[REF_FROZEN] = fn
        ratio_pairs.append((OURS, REF_FROZEN, "ours / reference (weights frozen)"))
    if "published" in phases:
        fn = reference(frozen=False)
        compared(REF_PUBLISHED, phase(REF_PUBLISHED, fn, z0, "as published: all weight gradients, cond recomputed"), r_ours)
        timed_fns[REF_PUBLISHED] = fn
        ratio_pairs.append((OURS, REF_PUBLISHED, "ours / reference as published (weight gradients on)"))
    if args.repeat > 1 and len(timed_fns) > 1:
        time_pairs(rows, timed_fns, args.repeat, cuda)
        write_report()
    if "options" in phases:
        phase("null-text inner_steps=5", lambda: ours(5), z0, "named option: fewer inner steps")
        phase("null-text epsilon=1e-3", lambda: ours(args.inner, 1e-3), z0, "named option: looser early stop")
    if "memory_saving" in phases:
        r_ms = phase("null-text memory_saving", lambda: ours(memory_saving=True), z0,
                     "named option: transformer activations recomputed in backward (same result)")
        if "reference_memory_saving" in phases:
            name = "null-text (reference, frozen) memory_saving"
            compared(name, phase(name, reference(frozen=True, memory_saving=True), z0,
                                 "the same gradient checkpointing around the reference"), r_ms)
            ratio_pairs.append(("null-text memory_saving", name, "ours / reference (frozen), both memory_saving"))
    if "precision" in phases:
        for prec in args.precision:
            dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[prec]
            m_lp = load(dt)[0]
            comfy_mm.load_models_gpu([m_lp])
            counters.append(Counter(m_lp.model.diffusion_model))
            lp_inv = inversion_for(m_lp)
            name = f"null-text, model {prec}"
            r_lp = phase(name, lambda: ours(m=m_lp, m_inv=lp_inv), z0, "named option: low-precision forward, fp32 embedding")
            if "reference" in phases:
                ref_name = f"null-text (reference, weights frozen), model {prec}"
                compared(ref_name, phase(ref_name, reference(m=m_lp, m_inv=lp_inv, frozen=True), z0,
                                         "same dtype, fp32 embedding and Adam"), r_lp)
                ratio_pairs.append((name, ref_name, f"ours / reference (weights frozen), model {prec}"))
            del m_lp
            if cuda:
                torch.cuda.empty_cache()
    if "fast" in phases:
        # Timed: the fast mode itself (its values). Then, untimed, the reconstruction through Edited Sample, whose
        # latent MSE the row reports (the same sampling for every mode, so it would only dilute the timings).
        default_pairs = True  # run_fast_inversion's default
        di_names = {}
        fast_fns = {}
        for method, pairs in (("negative-prompt", True), ("direct-inversion", True), ("direct-inversion", False)):
            def fast(method=method, pairs=pairs):
                with torch.inference_mode():
                    value, _ = run_fast_inversion(model, source, null, inv, method, args.guidance, batch_pairs=pairs)
                return {"value": value}
            calls = ""
            if method == "direct-inversion":
                calls = (", one batch-2 call per step" if pairs else ", two batch-1 calls per step") + \
                    (" (default)" if pairs == default_pairs else "")
                di_names[pairs] = f"{method}{calls}"
            name = f"{method}{calls}"
            value = phase(name, fast, None, "fast mode (its values only; the row's MSE: reconstruction through "
                                            "Edited Sample, untimed)")["value"]
            fast_fns[name] = fast
            with torch.inference_mode():
                out, _ = run_edit(model, inv, value, source, None, None, args.guidance, preview=False)
            record_reconstruction(rows[-1], out[0:1], z0)
            write_report()
        if args.repeat > 1:
            time_pairs(rows, {n: fast_fns[n] for n in di_names.values()}, args.repeat, cuda)
            write_report()
        ratio_pairs.append((di_names[True], di_names[False], "Direct Inversion: one batch-2 call / two batch-1 calls per step"))
    if "edit" in phases and clip is not None:
        control, _, target = build_control(clip, source_text, target_text, "replace", 0.8, 0.5, "", "", "cat, tiger", 0.3, 0.2)

        def edit():
            with torch.inference_mode():
                out, _ = run_edit(model, inv, r_ours["value"], source, target, control, args.guidance, preview=False)
            return {"recon": out[0:1]}

        phase("edit (P2P replace + blend, 1 edit)", edit, z0, "row 0 reconstruction, row 1 edit")

    report["ratios"] = ratio_section(rows, ratio_pairs, on_cpu)
    report["targets"] = targets_section(report)
    report["partial"] = False
    write_report()
    md = render_markdown(report)
    print()
    print(md)
    if args.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w") as f:
            f.write(md)
    print(f"wrote {args.json}" + (f" and {args.markdown}" if args.markdown else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
