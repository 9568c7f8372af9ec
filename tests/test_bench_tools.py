"""The benchmark's own logic: the CPU-utilisation refusal, the result-equality check, the report, the targets, and
the full-size random UNets of ``bench/random_unet.py`` (layout and size checked on the meta device, no memory)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import run_bench  # noqa: E402


def row(name: str, walls: list[float], utils: list[float]) -> dict:
    return {"phase": name, "wall_s": sorted(walls)[len(walls) // 2], "wall_runs": walls, "cpu_util_runs": utils}


PAIRS = [(run_bench.OURS, run_bench.REF_FROZEN, "ours / reference (weights frozen)")]


def test_ratios_withheld_when_a_cpu_run_was_starved():
    rows = [row(run_bench.OURS, [9.0, 9.2, 9.1], [0.98, 0.97, 0.99]),
            row(run_bench.REF_FROZEN, [10.0, 10.1, 9.9], [0.97, 0.62, 0.99])]
    out = run_bench.ratio_section(rows, PAIRS, on_cpu=True)
    assert out["withheld"] is True
    assert "ratios" not in out
    assert f"{run_bench.REF_FROZEN} run 2: 0.62" in out["reason"] and "Rerun on an idle machine" in out["reason"]
    # A missing utilisation reading is no better than a low one.
    rows[1]["cpu_util_runs"] = [0.97, None, 0.99]
    assert run_bench.ratio_section(rows, PAIRS, on_cpu=True)["withheld"] is True


def test_ratios_reported_with_pairs_when_every_run_was_compute_bound():
    rows = [row(run_bench.OURS, [9.0, 9.5, 9.1], [0.98, 0.97, 0.99]),
            row(run_bench.REF_FROZEN, [10.0, 10.0, 9.1], [0.97, 0.95, 0.99])]
    out = run_bench.ratio_section(rows, PAIRS, on_cpu=True)
    assert out["withheld"] is False and out["utilisation_checked"] is True
    entry = out["ratios"]["ours / reference (weights frozen)"]
    assert entry["median_ratio"] == round(9.1 / 10.0, 3)
    assert entry["pair_ratios"] == [0.9, 0.95, 1.0]
    # On a GPU the CPU waits for the device: low utilisation is expected and not checked.
    rows[1]["cpu_util_runs"] = [0.1, 0.1, 0.1]
    gpu = run_bench.ratio_section(rows, PAIRS, on_cpu=False)
    assert gpu["withheld"] is False and gpu["utilisation_checked"] is False


class _Value:
    def __init__(self, embeddings: torch.Tensor) -> None:
        self.embeddings = embeddings


def _runs(recon_shift: float, iterations_ref: list[int]):
    g = torch.Generator().manual_seed(0)
    embs = torch.randn(10, 1, 77, 8, generator=g)
    recon = torch.randn(1, 4, 8, 8, generator=g)
    ours = {"value": _Value(embs), "iterations": [10] * 10, "recon": recon}
    ref = {"embs": embs + 1e-6, "iterations": iterations_ref, "recon": recon + recon_shift}
    return ours, ref


def test_equality_check_accepts_rounding_and_one_early_stop_flip_only():
    scale = float(_runs(0.0, [10] * 10)[0]["recon"].abs().max())
    ours, ref = _runs(1e-3 * scale, [10] * 9 + [9])
    c = run_bench.compare(ours, ref)
    assert c["results_equal_within_tolerance"] is True
    assert c["steps_with_equal_iterations"] == "9/10" and c["iterations_total"] == {"ours": 100, "reference": 99}
    assert c["max_embedding_diff_vs_ours"] == pytest.approx(1e-6, rel=0.05)  # float32 rounding of x + 1e-6
    # A reconstruction off by more than 1 % of its largest element is a different result ...
    assert run_bench.compare(*_runs(0.02 * scale, [10] * 10))["results_equal_within_tolerance"] is False
    # ... and so are iteration counts apart by two, or flips at more than 10 % of the steps.
    assert run_bench.compare(*_runs(0.0, [10] * 9 + [8]))["results_equal_within_tolerance"] is False
    assert run_bench.compare(*_runs(0.0, [10] * 8 + [9, 9]))["results_equal_within_tolerance"] is False


def _report(device: str, checkpoint: str, steps: int, ratio, peak_mib=None, wall=None) -> dict:
    ours = {"phase": run_bench.OURS, "wall_s": wall if wall is not None else 1.0, "cpu_util": 0.99}
    if peak_mib is not None:
        ours["peak_gpu_mib"] = peak_mib
    ref = {"phase": run_bench.REF_FROZEN, "wall_s": 1.0, "cpu_util": 0.99, "results_equal_within_tolerance": True,
           "max_embedding_diff_vs_ours": 1e-6, "rms_embedding_diff_vs_ours": 1e-7, "recon_diff_vs_ours": 1e-6,
           "recon_rel_diff_vs_ours": 1e-6, "steps_with_equal_iterations": f"{steps}/{steps}"}
    ratios = {} if ratio is None else {"withheld": False, "utilisation_checked": device == "cpu", "ratios": {
        "ours / reference (weights frozen)": {"ours": run_bench.OURS, "reference": run_bench.REF_FROZEN,
                                              "median_ratio": ratio}}}
    return {"settings": {"device": device, "checkpoint": checkpoint, "steps": steps, "size": 512 if device != "cpu" else 128,
                         "inner": 10, "guidance": 7.5},
            "machine": {}, "phases": [ours, ref], "ratios": ratios}


def test_targets_follow_the_issue():
    cpu50 = run_bench.targets_section(_report("cpu", "tiny", 50, 0.86))["cpu_no_regression"]
    assert cpu50["limit_ratio_vs_frozen"] == 0.87 and cpu50["met"] is True
    cpu10 = run_bench.targets_section(_report("cpu", "tiny", 10, 0.96))["cpu_no_regression"]
    assert cpu10["limit_ratio_vs_frozen"] == 0.95 and cpu10["met"] is False
    assert run_bench.targets_section(_report("cpu", "tiny", 10, None))["cpu_no_regression"]["met"] is None
    gpu = run_bench.targets_section(_report("cuda:0", "random-sd15-full", 50, 0.79, peak_mib=5000, wall=19.0))
    assert gpu["gpu_sd15_512"]["met"] is True and gpu["gpu_sd15_512"]["peak_gpu_gb"] == round(5000 * 2 ** 20 / 1e9, 2)
    over_memory = run_bench.targets_section(_report("cuda:0", "random-sd15-full", 50, 0.79, peak_mib=6000, wall=19.0))
    assert over_memory["gpu_sd15_512"]["met"] is False  # 6000 MiB = 6.29 GB
    assert run_bench.targets_section(_report("cpu", "tiny", 20, 0.5)) == {}  # no target for 20 steps


def test_markdown_says_why_ratios_are_missing():
    report = _report("cpu", "tiny", 10, None)
    report["ratios"] = {"withheld": True, "reason": "CPU utilisation below 0.9 in 1 timed run(s)"}
    md = run_bench.render_markdown(report)
    assert "**ratios withheld**: CPU utilisation below 0.9" in md
    assert f"| {run_bench.OURS} | 1.0 | 0.99 |" in md
    md = run_bench.render_markdown(_report("cpu", "tiny", 10, 0.93))
    assert "ours / reference (weights frozen): **0.93x**" in md and "withheld" not in md


@pytest.mark.host
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_full_size_random_unets_are_the_hosts_models_at_their_real_size(host, family):
    """The full configurations are recognised by the host's own detection as SD15 / SDXL, and the UNet the host
    builds from them (on the meta device: no memory) has the parameter count of the published models."""
    import comfy.model_base
    import random_unet

    cfg = random_unet.unet_config(family)
    model_config = random_unet._model_config(family, "full", cfg)
    base = model_config.get_model({}, "", device=torch.device("meta"))
    assert isinstance(base, comfy.model_base.SDXL if family == "sdxl" else comfy.model_base.BaseModel)
    n = sum(p.numel() for p in base.diffusion_model.parameters())
    assert n == random_unet.FULL_PARAMETERS[family]
    assert n == {"sd15": 859_520_964, "sdxl": 2_567_463_684}[family]


@pytest.mark.host
def test_tiny_random_unet_is_seeded_and_dtype_consistent(host):
    """The tiny layout (the CPU check of bench/gpu.sh): one seed gives the same weights in fp32 and bf16 up to
    rounding, another seed other weights, and the scaled cross-attention keys are as documented."""
    import random_unet

    a = random_unet.build_random_model("sd15", "cpu", torch.float32, seed=0, scale="tiny")
    b = random_unet.build_random_model("sd15", "cpu", torch.bfloat16, seed=0, scale="tiny")
    c = random_unet.build_random_model("sd15", "cpu", torch.float32, seed=1, scale="tiny")
    sa, sb, sc = (m.model.diffusion_model.state_dict() for m in (a, b, c))
    key = next(k for k in sa if k.endswith("attn2.to_k.weight"))
    assert sb[key].dtype == torch.bfloat16
    assert torch.allclose(sa[key], sb[key].float(), rtol=1e-2, atol=1e-3)
    assert not torch.allclose(sa[key], sc[key])
    fan_in = sa[key].shape[1]
    assert float(sa[key].std()) == pytest.approx(random_unet.ATTN2_KEY_SCALE / fan_in ** 0.5, rel=0.1)
    assert random_unet.unet_parameters(a) < 60_000_000
