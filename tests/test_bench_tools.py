"""The benchmark's own logic: the CPU-utilisation refusal, the result-equality check, the report, the targets, the
full-size random UNets of ``bench/random_unet.py`` and transformers of ``bench/random_mmdit.py`` (layout and size
checked on the meta device, no memory), and the flow-family rows (SD3, Qwen-Image: tiny models, a few steps, every
row's model calls at its algorithm's floor)."""

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


def test_sd35m_target_applies_to_the_full_size_bf16_run_only():
    def report(device="cuda:0", name="NVIDIA H200", wall=55.0, peak_mib=15000, dtype="bfloat16", steps=28):
        return {"settings": {"device": device, "checkpoint": "random-sd35m-full", "steps": steps, "size": 1024,
                             "inner": 10, "guidance": 4.5, "model": {"dtype": dtype}},
                "machine": {"device_name": name}, "ratios": {},
                "phases": [{"phase": "null-text memory_saving", "wall_s": wall, "peak_gpu_mib": peak_mib}]}

    t = run_bench.targets_section(report())["gpu_sd35m_1024_memory_saving"]
    assert t["met"] is True and t["on_target_device"] is True and t["limit_s"] == 60.0 and t["limit_gb"] == 20.0
    assert run_bench.targets_section(report(wall=61.0))["gpu_sd35m_1024_memory_saving"]["met"] is False
    assert run_bench.targets_section(report(peak_mib=19100))["gpu_sd35m_1024_memory_saving"]["met"] is False  # 20.03 GB
    assert run_bench.targets_section(report(name="NVIDIA H100 80GB HBM3"))["gpu_sd35m_1024_memory_saving"][
        "on_target_device"] is False
    assert run_bench.targets_section(report(dtype="float32")) == {}
    assert run_bench.targets_section(report(steps=10)) == {}
    assert run_bench.targets_section(report(device="cpu")) == {}


def test_floor_columns_appear_only_for_rows_that_have_them():
    sd = _report("cpu", "tiny", 10, 0.93)
    assert "calls_per_step" not in run_bench.render_markdown(sd)
    sd["phases"][0].update(unet_calls=24, unet_evals=24, backward=20, calls_per_step=2.4, floor_calls=24,
                           floor_backward=20, at_floor=True, floor_rule="1 cond + k (fwd+bwd) + 1 uncond per step")
    md = run_bench.render_markdown(sd)
    assert "| calls_per_step | floor_calls | floor_backward | at_floor |" in md
    assert f"- {run_bench.OURS}: floor 1 cond + k (fwd+bwd) + 1 uncond per step; measured 24 calls (24 rows), " \
           "20 backward: at the floor" in md


@pytest.mark.host
@pytest.mark.parametrize("kind", ["sd35m", "qwen-image"])
def test_full_size_random_mmdits_are_what_the_host_detects(host, kind):
    """SD3.5 Medium and Qwen-Image as the host builds them from the configurations of bench/random_mmdit.py (on the
    meta device: no memory): the host's detection, run on the built model's own keys and shapes, gives the
    configuration back and picks the family's class; the parameter counts are the published models'."""
    import comfy.model_detection
    import comfy.supported_models
    import random_mmdit

    cfg = random_mmdit.mmdit_config(kind)
    config = random_mmdit.model_config(kind, cfg)
    assert type(config) is {"sd35m": comfy.supported_models.SD3, "qwen-image": comfy.supported_models.QwenImage}[kind]
    net = config.get_model({}, "", device=torch.device("meta")).diffusion_model
    assert comfy.model_detection.detect_unet_config(net.state_dict(), "") == cfg
    assert sum(p.numel() for p in net.parameters()) == random_mmdit.FULL_PARAMETERS[kind]
    if kind == "sd35m":
        assert cfg["depth"] == 24 and cfg["x_block_self_attn_layers"] == list(range(13)) and cfg["qk_norm"] == "rms"
        assert cfg["pos_embed_max_size"] == 384 and cfg["adm_in_channels"] == 2048
        assert cfg["context_embedder_config"]["params"] == {"in_features": 4096, "out_features": 1536}
    else:
        assert net.txt_in.in_features == 3584 and len(net.transformer_blocks) == 60
        reduced = random_mmdit.model_config(kind, random_mmdit.mmdit_config(kind, layers=30))
        half = reduced.get_model({}, "", device=torch.device("meta")).diffusion_model
        assert len(half.transformer_blocks) == 30 and half.txt_in.in_features == 3584


def _run_bench_in_process(host, tmp_path, argv: list[str]) -> dict:
    """run_bench.py's main() after the host is set up (the test session's host, on the CPU)."""
    parser = run_bench.build_parser()
    args = parser.parse_args([*argv, "--json", str(tmp_path / "bench.json")])
    return run_bench.run(args, host, run_bench.phases_to_run(args, parser))


@pytest.mark.host
@pytest.mark.parametrize("model_args", [
    ["--tiny-sd3"], ["--tiny-qwen-image"],
    ["--random-unet", "sd35m", "--random-scale", "tiny", "--model-dtype", "bf16"],
    ["--random-unet", "qwen-image", "--random-scale", "tiny", "--model-dtype", "bf16"],
], ids=["tiny-sd3", "tiny-qwen-image", "random-sd35m-tiny", "random-qwen-image-tiny"])
def test_flow_rows_run_and_their_model_calls_are_at_the_floor(host, tmp_path, model_args):
    """The flow-family rows (bench/flow_phases.py) on the tiny models, 2 steps x 2 inner iterations: every phase
    runs, and every row's model calls, rows and backward passes are its algorithm's floor (null-text: 1 cond +
    k (fwd+bwd) + 1 uncond per step)."""
    import json

    steps = 2
    report = _run_bench_in_process(host, tmp_path, [*model_args, "--steps", str(steps), "--inner", "2",
                                                    "--phases", "plain,memory_saving,fast,edit"])
    family = "SD3" if "sd3" in model_args[0] or "sd35m" in model_args else "Qwen-Image"
    assert report["settings"]["family"] == family and not report["partial"]
    assert report["settings"]["guidance"] == {"SD3": 4.5, "Qwen-Image": 4.0}[family]
    rows = {r["phase"]: r for r in report["phases"]}
    assert set(rows) == {"inversion (flow, Euler)", "plain Euler @ guidance (no NTI)", run_bench.OURS,
                         "null-text memory_saving", "negative-prompt",
                         "direct-inversion, one batch-2 call per step (default)",
                         "direct-inversion, two batch-1 calls per step", "edit (P2P replace + blend, 1 edit)"}
    for r in rows.values():
        assert r["at_floor"] is True, r
        assert r["wall_s"] > 0 and r["calls_per_step"] == round(r["unet_calls"] / steps, 2)
    for name in (run_bench.OURS, "null-text memory_saving"):
        k = rows[name]["inner_iterations"]
        assert 0 < k <= steps * 2
        assert (rows[name]["unet_calls"], rows[name]["unet_evals"], rows[name]["backward"]) == (2 * steps + k,) * 2 + (k,)
    assert rows["null-text memory_saving"]["latent_mse"] == rows[run_bench.OURS]["latent_mse"]  # same result
    assert rows["inversion (flow, Euler)"]["unet_calls"] == steps
    assert rows["edit (P2P replace + blend, 1 edit)"]["unet_evals"] == 2 * 2 * steps
    assert json.loads((tmp_path / "bench.json").read_text())["phases"] == report["phases"]


@pytest.mark.host
def test_full_size_random_flux_dev_is_what_the_host_detects(host):
    """Flux.1-dev as the host builds it from bench/random_mmdit.py's configuration (meta device): the host's
    detection on the built model's keys and shapes gives the configuration back (plus the fields a newer host adds)
    and picks comfy.supported_models.Flux; 19 double and 38 single blocks, 11.9 B parameters."""
    import comfy.model_detection
    import comfy.supported_models
    import random_mmdit

    cfg = random_mmdit.mmdit_config("flux-dev")
    config = random_mmdit.model_config("flux-dev", cfg)
    assert type(config) is comfy.supported_models.Flux
    net = config.get_model({}, "", device=torch.device("meta")).diffusion_model
    detected = comfy.model_detection.detect_unet_config(net.state_dict(), "")
    assert {k: detected[k] for k in cfg} == cfg
    assert len(net.double_blocks) == 19 and len(net.single_blocks) == 38
    assert sum(p.numel() for p in net.parameters()) == random_mmdit.FULL_PARAMETERS["flux-dev"]


@pytest.mark.host
def test_flux_dev_rows_are_inversion_direct_inversion_and_edit_at_the_floor(host, tmp_path):
    """The guidance-distilled family on the narrow random Flux-dev (bench/gpu.sh's flux run, GPU_SH_TINY): no
    null-text row; inversion and Direct Inversion at 1 conditional call per step, the edit at one call of the two
    prompts' conditional rows per step (guidance 1), its source row on the photo's latent."""
    steps = 2
    report = _run_bench_in_process(host, tmp_path, ["--random-unet", "flux-dev", "--random-scale", "tiny",
                                                    "--model-dtype", "bf16", "--steps", str(steps), "--inner", "0",
                                                    "--phases", "edit"])
    assert report["settings"]["family"] == "Flux" and report["settings"]["guidance"] == 1.0
    rows = {r["phase"]: r for r in report["phases"]}
    assert set(rows) == {"inversion (flow, Euler)", "direct-inversion, guidance 1 (conditional only)",
                         "edit (P2P replace + blend, 1 edit)"}
    for r in rows.values():
        assert r["at_floor"] is True and r["backward"] == 0, r
    assert rows["direct-inversion, guidance 1 (conditional only)"]["unet_calls"] == steps
    assert (rows["edit (P2P replace + blend, 1 edit)"]["unet_calls"],
            rows["edit (P2P replace + blend, 1 edit)"]["unet_evals"]) == (steps, 2 * steps)
    assert rows["edit (P2P replace + blend, 1 edit)"]["latent_mse"] < 1e-8
