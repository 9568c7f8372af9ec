"""Benchmark: the cost and quality of DDIM inversion, null-text optimisation, fast modes and an edit.

    python bench/run_bench.py                       # tiny random model on CPU, 50 steps at 64 px (~4 min, 2 cores)
    python bench/run_bench.py --steps 10 --size 128 --repeat 3        # shorter trajectory, larger latent
    python bench/run_bench.py --tiny-sdxl           # the tiny SDXL-layout model
    python bench/run_bench.py --checkpoint /path/v1-5-pruned-emaonly.safetensors --image photo.jpg

Prints one table (UNet forward evaluations and backward passes per phase, inner iterations, wall time, peak
memory, reconstruction latent MSE and decoded PSNR) and writes it as JSON (--json). The baseline "reference" row
is the authors' NullInversion transcribed in bench/reference_nti.py, run on the same model and inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Optional
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]  # the repo's nodes/ shadows the host's


def import_pack():
    """The repo as package ``nulltext_p2p`` (a symlink in a temp dir), without the repo root on sys.path."""
    link_dir = tempfile.mkdtemp(prefix="ntp_bench_")
    os.symlink(REPO, os.path.join(link_dir, "nulltext_p2p"), target_is_directory=True)
    sys.path.insert(0, link_dir)
    sys.path.insert(0, str(REPO / "tests"))  # tiny_model, helpers
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
            self.torch.cuda.reset_peak_memory_stats()
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


@contextmanager
def weights_require_grad(module):
    """As a diffusers UNet (the reference's setting): every weight requires grad inside the block; afterwards the
    flags are as before and the accumulated gradients are dropped."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None


def warm_up(model, source, null, latent, guidance: float, weight_grads: bool = True) -> None:
    """One untimed pass of every kind of work, so no timed phase pays first-call costs (allocator pools, kernel
    selection): a 2-step inversion, null-text for 2 steps x 2 iterations, and a forward+backward with weight
    gradients as the reference runs it."""
    import torch
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    with torch.inference_mode():
        inv = run_inversion(model, source, latent, 2)
        run_null_text(model, source, null, inv, guidance, 2, 0.0)
    if weight_grads:
        diffusion = model.model.diffusion_model
        with weights_require_grad(diffusion):
            x = inv.latents[-1].to(model.load_device).clone()
            t = torch.full((1,), 500.0, device=x.device)
            diffusion(x, timesteps=t, context=source[0][0].to(x.device).clone()).float().pow(2).mean().backward()
    print("bench: warm-up done (untimed)", flush=True)


def time_pairs(rows: list, fns: dict, repeat: int) -> None:
    """Run each of ``fns`` (phase name -> callable) ``repeat - 1`` more times, alternating which goes first, and
    set its row's ``wall_s`` to the median of all its runs (``wall_runs`` keeps them)."""
    import statistics

    by_name = {r["phase"]: r for r in rows}
    runs = {name: [by_name[name]["wall_s"]] for name in fns}
    names = list(fns)
    for k in range(1, repeat):
        for name in (names[::-1] if k % 2 else names):
            t0 = time.perf_counter()
            fns[name]()
            runs[name].append(round(time.perf_counter() - t0, 3))
            print(f"  {name:<34} {runs[name][-1]:8.2f} s  (repeat {k + 1}/{repeat})", flush=True)
    for name, walls in runs.items():
        by_name[name]["wall_runs"] = walls
        by_name[name]["wall_s"] = round(statistics.median(walls), 3)


def psnr(a, b) -> float:
    mse = float(((a.detach().double() - b.detach().double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfyui", help="ComfyUI checkout (default: COMFYUI_PATH, then ~/ComfyUI)")
    ap.add_argument("--checkpoint", help="an SD 1.x/2.x or SDXL checkpoint; default: the tiny random test model")
    ap.add_argument("--tiny-sdxl", action="store_true",
                    help="use the tiny random SDXL-layout test model (tests/tiny_sdxl.py) instead of the SD 1.x one; "
                         "the authors' reference is SD 1.x code and is skipped")
    ap.add_argument("--image", help="an image file; default: a synthetic image (tiny model: a synthetic latent)")
    ap.add_argument("--size", type=int, default=None, help="image side in px (default 512; tiny models 64 for SD 1.x, 128 for SDXL)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default 50, the paper's)")
    ap.add_argument("--inner", type=int, default=10, help="inner iterations (default 10)")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--cpu", action="store_true", help="force the CPU")
    ap.add_argument("--skip-reference", action="store_true", help="do not run the reference baseline")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time ours and the reference this many times each, in alternating order, and report the "
                         "median (CPU timings vary by ~10%% from run to run)")
    ap.add_argument("--flush-denormal", action="store_true",
                    help="flush denormal floats to zero on the CPU (torch.set_flush_denormal), to check whether "
                         "denormal arithmetic affects CPU timings (it made no clear difference on the tiny model)")
    ap.add_argument("--precision", action="append", default=[], choices=["fp16", "bf16"],
                    help="also run null-text with the model in this dtype (embedding stays fp32)")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "latest.json"))
    args = ap.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from runner.host import find_comfyui, setup_host  # noqa: E402

    tiny = args.checkpoint is None
    sys.path.insert(0, str(REPO / "tests"))
    from torchvision_placeholder import install_torchvision_placeholder

    if install_torchvision_placeholder():
        print("bench: torchvision unusable here, placeholder installed (SD 1.x never uses it)")
    host = setup_host(find_comfyui(args.comfyui), cpu=args.cpu or tiny)
    if str(REPO) in sys.path:
        sys.path.remove(str(REPO))
    import_pack()
    import torch

    from helpers import encode, image_latent, make_test_image  # tests/helpers.py
    from nulltext_p2p.core.ddim import ddim_sample
    from nulltext_p2p.host.text_condition import text_condition
    from nulltext_p2p.host.unet import HostUNet, alphas_cumprod
    from nulltext_p2p.nodes.attention_controller import build_control
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text
    import comfy.sd

    steps = args.steps or 50
    size = args.size or ((128 if args.tiny_sdxl else 64) if tiny else 512)
    ckpt = args.checkpoint
    if tiny and not args.tiny_sdxl:
        from tiny_model import build_tiny_sd15_checkpoint

        ckpt = build_tiny_sd15_checkpoint(os.path.join(tempfile.mkdtemp(prefix="ntp_bench_ckpt_"), "tiny.safetensors"))

    def load(dtype=None):
        if args.tiny_sdxl:
            from tiny_sdxl import build_tiny_sdxl

            return build_tiny_sdxl(dtype=dtype or torch.float32)
        opts = {} if dtype is None else {"dtype": dtype}
        return comfy.sd.load_checkpoint_guess_config(ckpt, output_vae=True, output_clip=True,
                                                     embedding_directory=None, model_options=opts)[:3]

    if args.flush_denormal and not torch.set_flush_denormal(True):
        print("bench: this CPU cannot flush denormals; timings as without --flush-denormal")
    model, clip, vae = load()
    from nulltext_p2p.host.unet import check_model_family

    if check_model_family(model, "bench") == "SDXL" and not args.skip_reference:
        print("bench: SDXL model: the authors' reference is SD 1.x code (no pooled vector); it is skipped")
        args.skip_reference = True
    model_name = "tiny-sdxl" if args.tiny_sdxl else ("tiny" if tiny else ckpt)
    source_text, target_text = "a cat sitting on a table", "a tiger sitting on a table"
    source, null = encode(clip, source_text), encode(clip, "")
    if args.image:
        from PIL import Image
        import numpy as np

        im = Image.open(args.image).convert("RGB").resize((size, size), Image.LANCZOS)
        image = torch.from_numpy(np.asarray(im).astype("float32") / 255.0)[None]
    else:
        image = make_test_image(size, size)
    latent = image_latent(model, size // 8, size // 8) if (tiny and not args.image) else {"samples": vae.encode(image)}

    comfy_mm = host.model_management
    comfy_mm.load_models_gpu([model])
    counters = [Counter(model.model.diffusion_model)]

    def snapshot() -> tuple[int, int, int]:
        return tuple(sum(c.snapshot()[k] for c in counters) for k in range(3))
    mem = PeakMemory(torch)
    rows: list[dict] = []
    state: dict = {}

    def decode_psnr(z_model) -> float:
        img = vae.decode(model.model.process_latent_out(z_model.to(torch.float32)))
        ref = vae.decode(latent["samples"]) if tiny and not args.image else image
        return psnr(img[..., :3].cpu().clamp(0, 1), ref[..., :3].cpu().clamp(0, 1))

    def phase(name: str, fn, z0=None, note: str = ""):
        row = {"phase": name, "note": note}
        f0, r0, b0 = snapshot()
        with mem.measure(row):
            t0 = time.perf_counter()
            result = fn()
            row["wall_s"] = round(time.perf_counter() - t0, 3)
        f1, r1, b1 = snapshot()
        row.update(unet_calls=f1 - f0, unet_evals=r1 - r0, backward=b1 - b0)
        rec = result.get("recon") if isinstance(result, dict) else None
        if rec is not None and z0 is not None:
            row["latent_mse"] = float(((rec.double().cpu() - z0.double().cpu()) ** 2).mean())
            row["psnr_db"] = round(decode_psnr(rec), 2)
        if isinstance(result, dict) and "iterations" in result:
            row["inner_iterations"] = int(sum(result["iterations"]))
        rows.append(row)
        print(f"  {name:<34} {row['wall_s']:8.2f} s  evals {row['unet_evals']:5d}  backward {row['backward']:5d}", flush=True)
        return result

    print(f"bench: {steps} steps, {size}px, inner {args.inner}, guidance {args.guidance}, "
          f"device {comfy_mm.get_torch_device()}, checkpoint {model_name}", flush=True)
    warm_up(model, source, null, latent, args.guidance, weight_grads=not args.skip_reference)
    inv = phase("ddim inversion", lambda: {"inv": run_inversion(model, source, latent, steps)})["inv"]
    z0 = inv.latents[0]
    unet = HostUNet(model)
    source_c, null_c = (text_condition(model, c, "bench", n) for c, n in ((source, "source"), (null, "null")))
    plain_nulls = null_c.unsqueeze(0).expand(steps, *null_c.shape)

    def plain():
        with torch.no_grad():
            return {"recon": ddim_sample(lambda x, t, c: unet.eps(x, t, c), inv.schedule, inv.x_T, source_c,
                                         plain_nulls, args.guidance)}

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
        state.setdefault("values", {})[(inner, eps)] = value
        return {"recon": final, "iterations": value.iterations, "value": value}

    r_ours = phase("null-text (ours, default)", ours, z0, "reference semantics")
    if not args.skip_reference:
        sys.path.insert(0, str(REPO / "bench"))
        from reference_nti import ReferenceNullInversion

        diffusion = model.model.diffusion_model

        def reference():
            with weights_require_grad(diffusion):
                def raw_unet(x, t, ctx):
                    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
                    return diffusion(x, timesteps=tt, context=ctx.expand(x.shape[0], -1, -1) if ctx.shape[0] == 1 else ctx)

                ref = ReferenceNullInversion(raw_unet, alphas_cumprod(model), steps, args.guidance)
                dev = comfy_mm.get_torch_device()
                traj = [z.to(dev) for z in inv.latents]
                embs, iters, final = ref.null_optimization(traj, null[0][0].to(dev), source[0][0].to(dev), args.inner, 1e-5)
                return {"recon": final.detach(), "iterations": iters, "embs": torch.stack(embs)}

        r_ref = phase("null-text (authors' reference)", reference, z0, "weight grads, cond recomputed")
        delta = r_ours["value"].embeddings.to(r_ref["embs"].device) - r_ref["embs"]
        rows[-1]["max_embedding_diff_vs_ours"] = float(delta.abs().max())
        rows[-1]["rms_embedding_diff_vs_ours"] = float(delta.pow(2).mean().sqrt())
        rows[-1]["recon_diff_vs_ours"] = float((r_ours["recon"].cpu() - r_ref["recon"].cpu()).abs().max())
        rows[-1]["iterations_equal"] = list(r_ours["iterations"]) == list(r_ref["iterations"])
        rows[-1]["iterations_per_step"] = {"ours": list(r_ours["iterations"]), "reference": list(r_ref["iterations"])}
        if args.repeat > 1:
            time_pairs(rows, {"null-text (ours, default)": ours, "null-text (authors' reference)": reference},
                       args.repeat)
    phase("null-text inner_steps=5", lambda: ours(5), z0, "named option: fewer inner steps")
    phase("null-text epsilon=1e-3", lambda: ours(args.inner, 1e-3), z0, "named option: looser early stop")
    phase("null-text memory_saving", lambda: ours(memory_saving=True), z0,
          "named option: transformer activations recomputed in backward (same result)")
    for prec in args.precision:
        dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[prec]
        m_lp = load(dt)[0]
        counters.append(Counter(m_lp.model.diffusion_model))
        lp_inv = inversion_for(m_lp)
        phase(f"null-text, model {prec}", lambda: ours(m=m_lp, m_inv=lp_inv), z0, "named option: low-precision forward, fp32 embedding")
    for method in ("negative-prompt", "direct-inversion"):
        def fast(method=method):
            with torch.inference_mode():
                value, final = run_fast_inversion(model, source, null, inv, method, args.guidance)
            state[method] = value
            with torch.inference_mode():
                out, _ = run_edit(model, inv, value, source, None, None, args.guidance, preview=False)
            return {"recon": out[0:1]}
        phase(f"{method} (+ reconstruction)", fast, z0, "fast mode")

    control, _, target = build_control(clip, source_text, target_text, "replace", 0.8, 0.5, "", "", "cat, tiger", 0.3, 0.2)

    def edit():
        with torch.inference_mode():
            out, _ = run_edit(model, inv, r_ours["value"], source, target, control, args.guidance, preview=False)
        return {"recon": out[0:1]}

    phase("edit (P2P replace + blend, 1 edit)", edit, z0, "row 0 reconstruction, row 1 edit")

    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch": torch.__version__, "device": str(comfy_mm.get_torch_device())},
        "settings": {"steps": steps, "size": size, "inner": args.inner, "guidance": args.guidance,
                     "flush_denormal": bool(args.flush_denormal), "repeat": args.repeat,
                     "checkpoint": model_name},
        "phases": rows,
    }
    cols = ["phase", "wall_s", "unet_evals", "backward", "inner_iterations", "peak_rss_mib", "peak_gpu_mib",
            "latent_mse", "psnr_db"]
    print()
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.3e}" if c == "latent_mse" and v != "" else str(v))
        print("| " + " | ".join(cells) + " |")
    if not args.skip_reference:
        ref_row = next(r for r in rows if r["phase"].startswith("null-text (authors"))
        our_row = next(r for r in rows if r["phase"] == "null-text (ours, default)")
        print(f"\nours vs reference (optimisation phase): {our_row['unet_evals']} vs {ref_row['unet_evals']} UNet evals "
              f"({ref_row['unet_evals'] - our_row['unet_evals']} fewer), wall {our_row['wall_s'] / ref_row['wall_s']:.2f}x, "
              f"embeddings max |diff| {ref_row['max_embedding_diff_vs_ours']:.2e} (rms {ref_row['rms_embedding_diff_vs_ours']:.2e}), "
              f"reconstruction max |diff| {ref_row['recon_diff_vs_ours']:.2e}, same iterations: {ref_row['iterations_equal']}")
        report["ours_vs_reference"] = {
            "evals_saved": ref_row["unet_evals"] - our_row["unet_evals"],
            "wall_ratio": our_row["wall_s"] / ref_row["wall_s"],
            "max_embedding_diff": ref_row["max_embedding_diff_vs_ours"],
            "rms_embedding_diff": ref_row["rms_embedding_diff_vs_ours"],
            "recon_max_diff": ref_row["recon_diff_vs_ours"],
            "iterations_equal": ref_row["iterations_equal"],
        }
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2, default=str)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
