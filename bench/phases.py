"""The bench's phases, in the order they run: warm-up, DDIM inversion, plain DDIM, null-text (ours and the
authors' reference, frozen and as published), the named options, memory_saving, the low-precision models, the fast
modes and one Prompt-to-Prompt edit (bench/README.md describes each).

Imported once the host is set up and the pack importable as ``nulltext_p2p`` (``workload.start_host``)."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional

import torch
from nulltext_p2p.core.ddim import ddim_sample
from nulltext_p2p.host.model_fingerprint import model_fingerprint
from nulltext_p2p.host.text_condition import text_condition
from nulltext_p2p.host.unet import HostUNet
from nulltext_p2p.nodes.attention_controller import build_control
from nulltext_p2p.nodes.ddim_invert import run_inversion
from nulltext_p2p.nodes.edited_sample import run_edit
from nulltext_p2p.nodes.fast_inversion import run_fast_inversion
from nulltext_p2p.nodes.null_text_optimize import run_null_text

from measure import PeakMemory, UNetCounters, psnr, time_pairs, timed
from reference_peer import ReferenceNullText, raw_unet, reference_run, weights_require_grad
from report import OURS, REF_FROZEN, REF_PUBLISHED, compare, write_json
from workload import SOURCE_PROMPT, TARGET_PROMPT, RunSettings, Workload, load_model

#: The reference rows next to ours: (phase group, row, weights frozen, note, ratio label).
REFERENCE_ROWS = (
    ("reference", REF_FROZEN, True, "headline peer: weights requires_grad False", "ours / reference (weights frozen)"),
    ("published", REF_PUBLISHED, False, "as published: all weight gradients, cond recomputed",
     "ours / reference as published (weight gradients on)"),
)

#: The fast modes timed, in order: (method, one batch-2 call per step).
FAST_MODES = (("negative-prompt", True), ("direct-inversion", True), ("direct-inversion", False))
FAST_MODE_NOTE = "fast mode (its values only; the row's MSE: reconstruction through Edited Sample, untimed)"


def fast_mode_name(method: str, pairs: bool) -> str:
    """A fast mode's row: Direct Inversion's says how it calls the UNet per step and whether that is the default."""
    if method != "direct-inversion":
        return method
    default_pairs = True  # run_fast_inversion's default
    return method + (", one batch-2 call per step" if pairs else ", two batch-1 calls per step") + \
        (" (default)" if pairs == default_pairs else "")


def warm_up(model, source, null, latent: dict, guidance: float, weight_grads: bool = True) -> None:
    """One untimed pass of every kind of work, so no timed phase pays first-call costs (allocator pools, kernel
    selection): a 2-step inversion, null-text for 2 steps x 2 iterations, Direct Inversion both ways (batch-1 and
    batch-2 calls), and a forward+backward with weight gradients as the published reference runs it."""
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


class Bench:
    """One bench run over the selected phase groups. Each phase is timed, counted and measured as one row of
    ``report["phases"]``, and the report is rewritten after every phase. Besides the report, its state is the DDIM
    inversion every phase starts from, ours' default result (what the references and the edit are compared with
    or start from), the inversions of the low-precision models, and the (ours, reference, label) ratio pairs."""

    def __init__(self, settings: RunSettings, workload: Workload, phase_groups: set[str], report: dict) -> None:
        self.settings = settings
        self.args = settings.args
        self.work = workload
        self.phase_groups = phase_groups
        self.report = report
        self.rows: list[dict] = report["phases"]
        self.counters = UNetCounters([workload.model.model.diffusion_model])
        self.memory = PeakMemory(torch)
        self.inversion: Any = None  # the source image's DDIM inversion (the first phase)
        self.z0: Optional[torch.Tensor] = None  # its z0: what reconstructions are measured against
        self.ours_result: Optional[dict] = None  # null-text ours, default settings
        self.inversions_by_model: dict[int, Any] = {}  # id(model) -> its own inversion (see inversion_for)
        self.ratio_pairs: list[tuple[str, str, str]] = []

    # -- the run ------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Warm up, then every selected phase group in order (the inversion and ours always)."""
        s, w, groups = self.settings, self.work, self.phase_groups
        print(f"bench: {s.steps} steps, {s.size}px, inner {self.args.inner}, guidance {self.args.guidance}, "
              f"device {s.device}, checkpoint {w.model_name}, phases {','.join(sorted(groups))}", flush=True)
        warm_up(w.model, w.source, w.null, w.latent, self.args.guidance, weight_grads="published" in groups)
        self.run_inversion()
        if "plain" in groups:
            self.run_plain_ddim()
        self.run_null_text_and_references()
        self.run_later_groups()

    def run_later_groups(self) -> None:
        """The phase groups that follow ours' null-text, in order: options, memory_saving, precision, fast, edit."""
        groups = self.phase_groups
        if "options" in groups:
            self.run_options()
        if "memory_saving" in groups:
            self.run_memory_saving()
        if "precision" in groups:
            self.run_precisions()
        if "fast" in groups:
            self.run_fast_modes()
        if "edit" in groups and self.work.clip is not None:
            self.run_p2p_edit()

    # -- recording a phase --------------------------------------------------------------------------------------

    def write_report(self) -> None:
        """Rewrite the JSON report (``--json``), as after every phase."""
        write_json(self.report, self.args.json)

    def decode_psnr(self, z_model: torch.Tensor) -> Optional[float]:
        """PSNR (dB) of the decoded ``z_model`` against the input image (or the decoded synthetic latent)."""
        w = self.work
        if w.vae is None:
            return None
        img = w.vae.decode(w.model.model.process_latent_out(z_model.to(torch.float32)))
        ref = w.vae.decode(w.latent["samples"]) if w.synthetic_latent else w.image
        return round(psnr(img[..., :3].cpu().clamp(0, 1), ref[..., :3].cpu().clamp(0, 1)), 2)

    def record_reconstruction(self, row: dict, rec: torch.Tensor, z0: torch.Tensor) -> None:
        """The row's latent MSE against z0 and, with a VAE, the decoded PSNR."""
        row["latent_mse"] = float(((rec.double().cpu() - z0.double().cpu()) ** 2).mean())
        p = self.decode_psnr(rec)
        if p is not None:
            row["psnr_db"] = p

    def record_phase(self, name: str, fn: Callable[[], Any], z0: Optional[torch.Tensor] = None, note: str = "") -> Any:
        """Time ``fn()`` as the phase ``name``: its row (wall time, CPU utilisation, UNet counts, peak memory and,
        for a result with ``recon`` and a ``z0``, the reconstruction's MSE and PSNR), printed and written; returns
        ``fn``'s result."""
        row = {"phase": name, "note": note}
        f0, r0, b0 = self.counters.snapshot()
        with self.memory.measure(row):
            result, row["wall_s"], row["cpu_util"] = timed(fn, self.settings.cuda)
        f1, r1, b1 = self.counters.snapshot()
        row.update(unet_calls=f1 - f0, unet_evals=r1 - r0, backward=b1 - b0)
        rec = result.get("recon") if isinstance(result, dict) else None
        if rec is not None and z0 is not None:
            self.record_reconstruction(row, rec, z0)
        if isinstance(result, dict) and "iterations" in result:
            row["inner_iterations"] = int(sum(result["iterations"]))
        self.rows.append(row)
        gpu = f"  gpu peak {row['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in row else ""
        print(f"  {name:<52} {row['wall_s']:8.2f} s  cpu util {row['cpu_util']}  evals {row['unet_evals']:5d}  "
              f"calls {row['unet_calls']:5d}  backward {row['backward']:5d}{gpu}", flush=True)
        self.write_report()
        return result

    def record_agreement(self, name: str, result: dict, ours_result: dict) -> None:
        """Add to the reference row ``name`` its agreement with ours (``report.compare``)."""
        row = next(r for r in self.rows if r["phase"] == name)
        row.update(compare(ours_result, result))
        self.write_report()

    # -- the timed work -----------------------------------------------------------------------------------------

    def invert_source(self) -> dict:
        """DDIM inversion of the source latent (ours)."""
        w = self.work
        return {"inv": run_inversion(w.model, w.source, w.latent, self.settings.steps)}

    def plain_ddim(self, unet: HostUNet, source_c: torch.Tensor, nulls: torch.Tensor) -> dict:
        """Guided DDIM from the inversion's x_T with the "" embedding at every step (what null-text fixes)."""
        inv = self.inversion
        with torch.no_grad():
            return {"recon": ddim_sample(unet.eps, inv.schedule, inv.x_T, source_c, nulls, self.args.guidance,
                                         eps_pair_fn=unet.eps_pair)}

    def null_text_ours(self, inner: Optional[int] = None, epsilon: float = 1e-5, model: Any = None,
                       inversion: Any = None, memory_saving: bool = False) -> dict:
        """Our null-text optimisation (``--inner`` iterations and the main model unless given)."""
        with torch.inference_mode():  # as ComfyUI runs nodes
            value, final = run_null_text(self.work.model if model is None else model, self.work.source,
                                         self.work.null, inversion or self.inversion, self.args.guidance,
                                         self.args.inner if inner is None else inner, epsilon,
                                         memory_saving=memory_saving)
        return {"recon": final, "iterations": value.iterations, "value": value}

    def reference_for(self, model: Any = None, inversion: Any = None, frozen: bool = True,
                      memory_saving: bool = False) -> ReferenceNullText:
        """The authors' null-text optimisation on ``model`` (default: the main model), ready to be timed."""
        return reference_run(self.work.model if model is None else model, inversion or self.inversion,
                             self.work.source, self.work.null, self.settings.steps, self.args.guidance,
                             self.args.inner, frozen=frozen, memory_saving=memory_saving)

    def fast_mode_values(self, method: str, pairs: bool) -> dict:
        """A fast mode's per-step values (``run_fast_inversion``), nothing more."""
        w = self.work
        with torch.inference_mode():
            value, _ = run_fast_inversion(w.model, w.source, w.null, self.inversion, method, self.args.guidance,
                                          batch_pairs=pairs)
        return {"value": value}

    def edit_source(self, target, control) -> dict:
        """Edited Sample from ours' default null-text: row 0 the reconstruction, row 1 the edit."""
        w = self.work
        with torch.inference_mode():
            out, _ = run_edit(w.model, self.inversion, self.ours_result["value"], w.source, target, control,
                              self.args.guidance, preview=False)
        return {"recon": out[0:1]}

    def inversion_for(self, model: Any) -> Any:
        """The inversion made with ``model`` (a model loaded in another dtype can have another fingerprint: the nodes
        then refuse the fp32 inversion, so it gets its own, made outside the timed phase)."""
        if model is self.work.model or model_fingerprint(model) == self.inversion.model_fingerprint:
            return self.inversion
        if id(model) not in self.inversions_by_model:
            with torch.inference_mode():
                self.inversions_by_model[id(model)] = run_inversion(model, self.work.source, self.work.latent,
                                                                    self.settings.steps)
        return self.inversions_by_model[id(model)]

    # -- the phase groups ---------------------------------------------------------------------------------------

    def run_inversion(self) -> None:
        """Phase 1: the DDIM inversion every later phase starts from."""
        self.inversion = self.record_phase("ddim inversion", self.invert_source)["inv"]
        self.z0 = self.inversion.latents[0]

    def run_plain_ddim(self) -> None:
        """Group ``plain``: guided DDIM reconstruction without null-text."""
        model, steps = self.work.model, self.settings.steps
        unet = HostUNet(model)
        source_c, null_c = (text_condition(model, c, "bench", n)
                            for c, n in ((self.work.source, "source"), (self.work.null, "null")))
        nulls = null_c.unsqueeze(0).expand(steps, *null_c.shape)
        self.record_phase("plain DDIM @ guidance (no NTI)", partial(self.plain_ddim, unet, source_c, nulls), self.z0,
                          "reconstruction without null-text")

    def run_null_text_and_references(self) -> None:
        """Ours with the default settings, then (groups ``reference``, ``published``) the authors' reference on the
        same inputs, each compared with ours; with ``--repeat`` all of them again in alternating order."""
        self.ours_result = self.record_phase(OURS, self.null_text_ours, self.z0, "reference semantics")
        timed_fns: dict[str, Callable[[], Any]] = {OURS: self.null_text_ours}
        for group, name, frozen, note, label in REFERENCE_ROWS:
            if group in self.phase_groups:
                fn = self.reference_for(frozen=frozen)
                self.record_agreement(name, self.record_phase(name, fn, self.z0, note), self.ours_result)
                timed_fns[name] = fn
                self.ratio_pairs.append((OURS, name, label))
        if self.args.repeat > 1 and len(timed_fns) > 1:
            time_pairs(self.rows, timed_fns, self.args.repeat, self.settings.cuda)
            self.write_report()

    def run_options(self) -> None:
        """Group ``options``: ours with fewer inner steps and with a looser early stop."""
        self.record_phase("null-text inner_steps=5", partial(self.null_text_ours, 5), self.z0,
                          "named option: fewer inner steps")
        self.record_phase("null-text epsilon=1e-3", partial(self.null_text_ours, self.args.inner, 1e-3), self.z0,
                          "named option: looser early stop")

    def run_memory_saving(self) -> None:
        """Group ``memory_saving`` (ours under gradient checkpointing) and, with ``reference_memory_saving``, the
        frozen reference under the same checkpointing."""
        ours_ms = self.record_phase("null-text memory_saving", partial(self.null_text_ours, memory_saving=True),
                                    self.z0, "named option: transformer activations recomputed in backward (same result)")
        if "reference_memory_saving" in self.phase_groups:
            name = "null-text (reference, frozen) memory_saving"
            self.record_agreement(name, self.record_phase(name, self.reference_for(frozen=True, memory_saving=True),
                                                          self.z0, "the same gradient checkpointing around the reference"),
                                  ours_ms)
            self.ratio_pairs.append(("null-text memory_saving", name, "ours / reference (frozen), both memory_saving"))

    def run_precisions(self) -> None:
        """Group ``precision``: each ``--precision`` model in turn, its memory released before the next."""
        for precision in self.args.precision:
            self.run_precision(precision)
            if self.settings.cuda:
                torch.cuda.empty_cache()

    def run_precision(self, precision: str) -> None:
        """Ours with the model loaded in ``precision`` (fp32 embedding) and, with group ``reference``, the frozen
        reference on the same model."""
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        model = load_model(self.settings, dtype)[0]
        self.settings.host.model_management.load_models_gpu([model])
        self.counters.add(model.model.diffusion_model)
        inversion = self.inversion_for(model)
        name = f"null-text, model {precision}"
        ours = self.record_phase(name, partial(self.null_text_ours, model=model, inversion=inversion), self.z0,
                                 "named option: low-precision forward, fp32 embedding")
        if "reference" in self.phase_groups:
            ref_name = f"null-text (reference, weights frozen), model {precision}"
            ref = self.reference_for(model=model, inversion=inversion, frozen=True)
            self.record_agreement(ref_name, self.record_phase(ref_name, ref, self.z0, "same dtype, fp32 embedding and Adam"),
                                  ours)
            self.ratio_pairs.append((name, ref_name, f"ours / reference (weights frozen), model {precision}"))

    def run_fast_modes(self) -> None:
        """Group ``fast``. Timed: each fast mode itself (its values). Then, untimed, the reconstruction through Edited
        Sample, whose latent MSE the row reports (the same sampling for every mode, so it would only dilute the
        timings). With ``--repeat`` the two Direct Inversion rows are timed again in alternation."""
        w = self.work
        fast_fns: dict[str, Callable[[], dict]] = {}
        for method, pairs in FAST_MODES:
            name = fast_mode_name(method, pairs)
            fast_fns[name] = partial(self.fast_mode_values, method, pairs)
            value = self.record_phase(name, fast_fns[name], None, FAST_MODE_NOTE)["value"]
            with torch.inference_mode():
                out, _ = run_edit(w.model, self.inversion, value, w.source, None, None, self.args.guidance,
                                  preview=False)
            self.record_reconstruction(self.rows[-1], out[0:1], self.z0)
            self.write_report()
        direct = {pairs: fast_mode_name("direct-inversion", pairs) for pairs in (True, False)}
        if self.args.repeat > 1:
            time_pairs(self.rows, {n: fast_fns[n] for n in direct.values()}, self.args.repeat, self.settings.cuda)
            self.write_report()
        self.ratio_pairs.append((direct[True], direct[False],
                                 "Direct Inversion: one batch-2 call / two batch-1 calls per step"))

    def run_p2p_edit(self) -> None:
        """Group ``edit``: one Prompt-to-Prompt edit (replace + local blend) through Edited Sample."""
        control, _, target = build_control(self.work.clip, SOURCE_PROMPT, TARGET_PROMPT, "replace", 0.8, 0.5, "", "",
                                           "cat, tiger", 0.3, 0.2)
        self.record_phase("edit (P2P replace + blend, 1 edit)", partial(self.edit_source, target, control), self.z0,
                          "row 0 reconstruction, row 1 edit")
