"""The bench's report: the phase names it compares, the agreement of a reference run with ours, the wall-time
ratios (withheld on a starved CPU), the targets, and the report written as JSON and markdown."""

from __future__ import annotations

import json
import os
import platform
from typing import Optional

from measure import cpu_threads

#: Below this CPU utilisation a timed CPU run does not measure this code (see the docstring of run_bench.py).
MIN_CPU_UTIL = 0.9

#: Results equal to the reference: reconstruction latent max |diff| at most this fraction of the reconstruction's
#: largest element (float32 rounding grows along the trajectory under guidance 7.5: measured 1e-4-4e-3 on the tiny
#: and random models; a wrong step or context gives order 1) ...
RECON_TOLERANCE = 1e-2
#: ... and the inner-iteration count differing (by one) at no more than this fraction of the steps: a step's float32
#: loss can lie within rounding of the early-stop threshold, and the two implementations then stop one apart.
ITERATION_FLIP_TOLERANCE = 0.1

#: The rows the ratios and targets compare.
OURS = "null-text (ours, default)"
REF_FROZEN = "null-text (reference, weights frozen)"
REF_PUBLISHED = "null-text (reference as published, weight grads)"


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
    model = s.get("model") or {}
    if s["device"].startswith("cuda") and s["checkpoint"] == "random-sd35m-full" and s["size"] == 1024 \
            and s["steps"] == 28 and s["inner"] == 10 and s["guidance"] == 4.5 and model.get("dtype") == "bfloat16":
        ms = by_name.get("null-text memory_saving", {})
        peak = ms.get("peak_gpu_mib")
        device_name = (report.get("machine") or {}).get("device_name", "")
        out["gpu_sd35m_1024_memory_saving"] = {
            "null_text_wall_s": ms.get("wall_s"), "limit_s": 60.0,
            "peak_gpu_gb": None if peak is None else round(peak * 2 ** 20 / 1e9, 2), "limit_gb": 20.0,
            "device_name": device_name, "target_device": "H200", "on_target_device": "H200" in device_name,
            "met": bool(ms.get("wall_s", 1e9) < 60.0 and peak is not None and peak * 2 ** 20 < 20e9),
        }
    if s["device"].startswith("cuda") and s["checkpoint"] == "random-flux-dev-full" and s["size"] == 1024 \
            and s["steps"] == 28:
        parts = [by_name.get(n, {}).get("wall_s") for n in ("inversion (flow, Euler)",
                                                            "direct-inversion, guidance 1 (conditional only)",
                                                            "edit (P2P replace + blend, 1 edit)")]
        peaks = [by_name.get(n, {}).get("peak_gpu_mib") for n in by_name]
        total = None if None in parts else round(sum(parts), 2)
        device_name = (report.get("machine") or {}).get("device_name", "")
        out["gpu_flux_dev_1024"] = {
            "inversion_plus_edit_wall_s": total, "limit_s": 30.0,
            "peak_gpu_gb": max((round(p * 2 ** 20 / 1e9, 2) for p in peaks if p is not None), default=None),
            "device_name": device_name, "target_device": "H200", "on_target_device": "H200" in device_name,
            "met": bool(total is not None and total < 30.0),
        }
    return out


COLS = ["phase", "wall_s", "cpu_util", "unet_evals", "unet_calls", "backward", "inner_iterations", "peak_rss_mib",
        "peak_gpu_mib", "latent_mse", "psnr_db"]
#: Columns the flow-family rows add (bench/flow_phases.py: model calls per step against the algorithm's floor);
#: shown only when a row has them, so the SD tables are unchanged.
FLOOR_COLS = ["calls_per_step", "floor_calls", "floor_backward", "at_floor"]


def render_markdown(report: dict) -> str:
    """The report as markdown: the settings line, the phase table, each reference's agreement with ours, the
    ratios (or why they are withheld) and the targets."""
    s = report["settings"]
    lines = [f"### {s['checkpoint']}: {s['steps']} steps, {s['size']} px, inner {s['inner']}, guidance {s['guidance']}, "
             f"device {s['device']}" + (f" ({report['machine']['device_name']})" if report["machine"].get("device_name") else ""), ""]
    if s.get("model"):
        lines[-1:-1] = ["", "model: " + ", ".join(f"{k} {v}" for k, v in s["model"].items())]
    cols = COLS + [c for c in FLOOR_COLS if any(c in r for r in report["phases"])]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in report["phases"]:
        cells = []
        for c in cols:
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
    for r in report["phases"]:
        if "floor_rule" in r:
            lines.append(f"- {r['phase']}: floor {r['floor_rule']}; measured {r['unet_calls']} calls "
                         f"({r['unet_evals']} rows), {r['backward']} backward: "
                         f"{'at the floor' if r['at_floor'] else 'ABOVE the floor'}")
    for name, t in (report.get("targets") or {}).items():
        lines.append(f"- target {name}: {json.dumps(t)}")
    return "\n".join(lines) + "\n"


def machine_info(host, device) -> dict:
    """The report's ``machine`` section: platform, CPUs, the T of the utilisation check, torch, host and device."""
    import torch

    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "cpu_threads_T": cpu_threads(), "torch": torch.__version__,
               "comfyui": str(host.path), "device": str(device)}
    if torch.device(device).type == "cuda":
        machine["device_name"] = torch.cuda.get_device_name(device)
    return machine


def settings_section(settings, workload, phase_groups: set[str]) -> dict:
    """The report's ``settings`` section (``settings``: a ``workload.RunSettings``, ``workload``: a
    ``workload.Workload``)."""
    args = settings.args
    out = {"steps": settings.steps, "size": settings.size, "inner": args.inner, "guidance": args.guidance,
           "flush_denormal": bool(args.flush_denormal), "repeat": args.repeat, "checkpoint": workload.model_name,
           "family": workload.family, "device": str(settings.device), "phases": sorted(phase_groups),
           "precision": args.precision, "min_cpu_util": MIN_CPU_UTIL}
    if getattr(workload, "model_info", None):
        out["model"] = workload.model_info
    return out


def new_report(machine: dict, settings: dict) -> dict:
    """An empty report (no phase yet, ``partial`` until the last phase is done)."""
    return {"machine": machine, "settings": settings, "phases": [], "partial": True}


def write_json(report: dict, path: str) -> None:
    """Write ``report`` to ``path`` atomically (a temp file, then a rename): rewritten after every phase."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, default=str)
    os.replace(tmp, path)


def complete_report(report: dict, ratio_pairs: list, on_cpu: bool) -> None:
    """Add the ratios of ``ratio_pairs`` [(ours phase, reference phase, label)] and the targets; no longer partial."""
    report["ratios"] = ratio_section(report["phases"], ratio_pairs, on_cpu)
    report["targets"] = targets_section(report)
    report["partial"] = False


def publish_report(report: dict, json_path: str, markdown_path: Optional[str]) -> None:
    """Write the JSON, print the markdown (and write it to ``markdown_path``), then say what was written."""
    write_json(report, json_path)
    md = render_markdown(report)
    print()
    print(md)
    if markdown_path:
        os.makedirs(os.path.dirname(os.path.abspath(markdown_path)), exist_ok=True)
        with open(markdown_path, "w") as f:
            f.write(md)
    print(f"wrote {json_path}" + (f" and {markdown_path}" if markdown_path else ""))
