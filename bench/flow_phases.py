"""The bench's phases for the flow-matching families (SD3/SD3.5, Qwen-Image, Flux-dev): warm-up, inversion (Euler ODE of the
host's sigmas), plain guided Euler, null-text (ours; the named options, memory_saving, other dtypes), the fast modes
and one Prompt-to-Prompt edit on joint attention.

There is no reference peer here (the authors' NullInversion is DDIM on SD's UNet), so each row is measured against
the floor of its own algorithm instead: the model calls (``apply_model``, counted by the forward hook on the
diffusion model, as for the SD rows) and backward passes it cannot do without, per step of ``S`` steps:

* inversion: 1 conditional call;
* null-text: 1 conditional + k (forward + backward of the unconditional branch; k = that step's inner iterations)
  + 1 unconditional call with the kept embedding: ``2 S + sum(k)`` calls and ``sum(k)`` backward passes;
* plain guided Euler and Direct Inversion with one batch-2 call: 1 call of 2 rows (2 calls where the unconditional
  and conditional contexts differ in length and cannot be batched: Qwen-Image's 5-token "" against the prompt);
  Direct Inversion with two batch-1 calls: 2 calls; negative-prompt inversion: 1 call;
* the edit through the host's sampler: 2 x prompts rows per step (conditional and unconditional of the source and
  each target), in 1 call where the host batches them.

Guidance-distilled families (Flux-dev) have no null-text row (Null-Text Optimize refuses them): their rows are the
inversion, Direct Inversion at guidance 1 (1 conditional call per step) and the edit from its values (1 call of the
prompts' conditional rows per step: guidance 1 has no unconditional branch).

A row at the floor does no model work beyond what its algorithm needs. Imported once the host is set up.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional

import torch
from nulltext_p2p.host.families import family_of
from nulltext_p2p.nodes.attention_controller import build_control
from nulltext_p2p.nodes.common import cond_fingerprint
from nulltext_p2p.nodes.ddim_invert import run_inversion
from nulltext_p2p.nodes.edited_sample import run_edit
from nulltext_p2p.nodes.fast_inversion import run_fast_inversion
from nulltext_p2p.nodes.null_text_optimize import run_null_text

from phases import Bench
from report import OURS
from workload import SOURCE_PROMPT, TARGET_PROMPT

INVERSION = "inversion (flow, Euler)"
DIRECT_CONDITIONAL = "direct-inversion, guidance 1 (conditional only)"
PLAIN = "plain Euler @ guidance (no NTI)"
EDIT = "edit (P2P replace + blend, 1 edit)"


class FlowBench(Bench):
    """``Bench`` for a flow-matching family: the same recording (wall time, CPU utilisation, model calls and rows,
    backward passes, peak memory, reconstruction MSE/PSNR) plus, on each row, its calls per step against the floor
    (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.family = family_of(self.work.model, "bench")
        self._edit_inputs: Optional[tuple] = None
        model, w = self.work.model, self.work
        # Can the unconditional ("") and the conditional context run as one batch (equal token counts)?
        self.batchable = tuple(self.family.text_condition(model, w.source, "bench", "source").shape) == \
            tuple(self.family.text_condition(model, w.null, "bench", "null").shape)

    # -- the run ------------------------------------------------------------------------------------------------

    def run(self) -> None:
        s, w, groups = self.settings, self.work, self.phase_groups
        print(f"bench: {w.family} (flow): {s.steps} steps, {s.size}px, inner {self.args.inner}, guidance "
              f"{self.args.guidance}, device {s.device}, model {w.model_name} "
              f"{str(w.model.model.get_dtype()).replace('torch.', '')}, phases {','.join(sorted(groups))}", flush=True)
        self.warm_up()
        self.run_inversion()
        if self.family.guidance_distilled:  # Direct Inversion (no null-text), then the edit
            self.ours_result = self.record_phase(DIRECT_CONDITIONAL, self.direct_inversion_values, self.z0,
                                                 "guidance-distilled: Direct Inversion in place of null-text")
            if "edit" in groups and w.clip is not None:
                self.run_p2p_edit()
            return
        if "plain" in groups:
            self.run_plain_euler()
        self.ours_result = self.record_phase(OURS, self.null_text_ours, self.z0,
                                             f"flow: Euler step with the guided velocity, null_start {self.family.null_start}")
        self.run_later_groups()

    def warm_up(self) -> None:
        """One untimed pass of every kind of work the selected phases do (2 steps each), so no timed phase pays
        first-call costs: inversion, null-text (2 iterations; with memory_saving too), Direct Inversion both ways,
        and a 2-step edit."""
        w, g, groups = self.work, self.args.guidance, self.phase_groups
        distilled = self.family.guidance_distilled
        with torch.inference_mode():
            inv = run_inversion(w.model, w.source, w.latent, 2)
            if distilled:
                value, _ = run_fast_inversion(w.model, w.source, w.null, inv, "direct-inversion", g)
                groups = groups & {"edit"}
            else:
                value, _ = run_null_text(w.model, w.source, w.null, inv, g, 2, 0.0)
            if "memory_saving" in groups:
                run_null_text(w.model, w.source, w.null, inv, g, 2, 0.0, memory_saving=True)
            for pairs in (False, True) if not distilled else ():
                run_fast_inversion(w.model, w.source, w.null, inv, "direct-inversion", g, batch_pairs=pairs)
            if "edit" in groups and w.clip is not None:
                control, target = self.edit_inputs()
                run_edit(w.model, inv, value, w.source, target, control, g, preview=False)
        if self.settings.cuda:
            torch.cuda.synchronize()
        print("bench: warm-up done (untimed)", flush=True)

    # -- recording, with the floor ------------------------------------------------------------------------------

    def record_phase(self, name: str, fn: Callable[[], Any], z0: Optional[torch.Tensor] = None, note: str = "") -> Any:
        result = super().record_phase(name, fn, z0, note)
        self.annotate_floor(self.rows[-1])
        return result

    def floor_of(self, row: dict) -> Optional[tuple[int, int, int, str]]:
        """(calls, rows, backward passes, rule) the row's algorithm cannot go below, or None (no rule)."""
        s, name = self.settings.steps, row["phase"]
        pair_calls = s if self.batchable else 2 * s
        pair_rule = "1 call of 2 rows (uncond + cond) per step" if self.batchable else \
            "2 calls per step (uncond and cond contexts differ in length: not batchable)"
        if "inner_iterations" in row:  # null-text, any option or dtype
            k = row["inner_iterations"]
            return 2 * s + k, 2 * s + k, k, f"1 cond + k (fwd+bwd) + 1 uncond per step = 2x{s} + {k} calls, {k} backward"
        if name in (INVERSION, DIRECT_CONDITIONAL):
            return s, s, 0, "1 cond call per step"
        if name == PLAIN:
            return pair_calls, 2 * s, 0, pair_rule
        if name == "negative-prompt":
            return s, s, 0, "1 cond call per step"
        if name.startswith("direct-inversion"):
            if "one batch-2 call" in name:
                return pair_calls, 2 * s, 0, pair_rule
            return 2 * s, 2 * s, 0, "2 calls of 1 row (uncond, cond) per step"
        if name == EDIT:
            prompts = 2
            if self.args.guidance == 1.0:  # the host's sampler skips the unconditional branch at guidance 1
                return s, prompts * s, 0, f"1 call of {prompts} rows (cond of {prompts} prompts) per step"
            return s, 2 * prompts * s, 0, f"1 call of {2 * prompts} rows (cond + uncond of {prompts} prompts) per step"
        return None

    def annotate_floor(self, row: dict) -> None:
        """Put the floor, the calls per step and whether the row is at the floor on ``row`` (printed, written)."""
        floor = self.floor_of(row)
        if floor is None:
            return
        calls, rows, backward, rule = floor
        at = row["unet_calls"] == calls and row["unet_evals"] == rows and row["backward"] == backward
        row.update(calls_per_step=round(row["unet_calls"] / self.settings.steps, 2), floor_calls=calls,
                   floor_evals=rows, floor_backward=backward, floor_rule=rule, at_floor=at)
        print(f"    floor: {rule}; {row['unet_calls']} calls / {row['unet_evals']} rows / {row['backward']} backward "
              f"-> {'at the floor' if at else 'ABOVE the floor'}", flush=True)
        self.write_report()

    # -- the phase groups ---------------------------------------------------------------------------------------

    def run_inversion(self) -> None:
        """The inversion (Euler ODE of the host's sigmas, guidance 1) every later phase starts from."""
        self.inversion = self.record_phase(INVERSION, self.invert_source)["inv"]
        self.z0 = self.inversion.latents[0]

    def run_plain_euler(self) -> None:
        """Group ``plain``: guided Euler from the inversion's x_T with the "" embedding at every step."""
        model, w, s = self.work.model, self.work, self.settings.steps
        unet = self.family.unet(model, self.inversion.schedule)
        source_c = self.family.text_condition(model, w.source, "bench", "source")
        null_c = self.family.text_condition(model, w.null, "bench", "null")
        nulls = null_c.unsqueeze(0).expand(s, *null_c.shape)
        self.record_phase(PLAIN, partial(self.plain_ddim, unet, source_c, nulls), self.z0,
                          "reconstruction without null-text")

    def direct_inversion_values(self) -> dict:
        """Direct Inversion's offsets at the run's guidance (guidance-distilled families: 1) and the reconstruction
        Edited Sample gives with them (the source row: the photo, to float32 rounding)."""
        w = self.work
        with torch.inference_mode():
            value, final = run_fast_inversion(w.model, w.source, w.null, self.inversion, "direct-inversion",
                                              self.args.guidance)
        return {"recon": final, "value": value}

    def edit_inputs(self) -> tuple:
        """(control, target CONDITIONING) of the edit (replace cat -> tiger + local blend), made once; with random
        text conditioning (bench/random_mmdit.py) the target gets random values of its shape and the control the
        matching fingerprints."""
        if self._edit_inputs is None:
            w = self.work
            control, _, target = build_control(w.clip, SOURCE_PROMPT, TARGET_PROMPT, "replace", 0.8, 0.5, "", "",
                                               "cat, tiger", 0.3, 0.2)
            if w.text is not None:
                target = w.text.randomize(target, TARGET_PROMPT)
                control.source_fingerprint = cond_fingerprint(w.source[0][0])
                control.target_fingerprint = cond_fingerprint(target[0][0])
            self._edit_inputs = (control, target)
        return self._edit_inputs

    def run_p2p_edit(self) -> None:
        """Group ``edit``: one Prompt-to-Prompt edit (replace + local blend) through Edited Sample."""
        control, target = self.edit_inputs()
        self.record_phase(EDIT, partial(self.edit_source, target, control), self.z0, "row 0 reconstruction, row 1 edit")
