"""Test-only custom node file for the browser test: placeholders for model-loader nodes the host failed to load.

The ComfyUI frontend (1.27) looks up a fixed list of model-loader nodes (CheckpointLoaderSimple, VAELoader,
UpscaleModelLoader, ...) whenever it builds a model combo such as ``ckpt_name``, and throws when one of them is not
registered. In the test environment UpscaleModelLoader is missing (its optional dependency spandrel is not
installed, see .ci/run), so the page could not create a Load Checkpoint node. This file registers a placeholder
(same name, one combo input, never executed by the tests) for each such node the host did not load; nodes the host
has are left alone.
"""

import folder_paths
import nodes

LOADERS = [
    ("CheckpointLoaderSimple", "checkpoints", "ckpt_name"),
    ("ImageOnlyCheckpointLoader", "checkpoints", "ckpt_name"),
    ("LoraLoader", "loras", "lora_name"),
    ("LoraLoaderModelOnly", "loras", "lora_name"),
    ("VAELoader", "vae", "vae_name"),
    ("ControlNetLoader", "controlnet", "control_net_name"),
    ("UNETLoader", "diffusion_models", "unet_name"),
    ("UpscaleModelLoader", "upscale_models", "model_name"),
    ("StyleModelLoader", "style_models", "style_model"),
    ("GLIGENLoader", "gligen", "gligen_name"),
]


def _placeholder(name: str, folder: str, input_name: str):
    class Placeholder:
        @classmethod
        def INPUT_TYPES(cls):
            try:
                files = folder_paths.get_filename_list(folder)
            except Exception:
                files = []
            return {"required": {input_name: (files,)}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        CATEGORY = "testing/placeholders"
        DESCRIPTION = f"Placeholder for {name} (not loaded by this host); browser tests only."

        def run(self, **kwargs):
            raise RuntimeError(f"{name} is a test placeholder")

    Placeholder.__name__ = f"Placeholder_{name}"
    return Placeholder


NODE_CLASS_MAPPINGS = {name: _placeholder(name, folder, inp) for name, folder, inp in LOADERS
                       if name not in nodes.NODE_CLASS_MAPPINGS}
PLACEHOLDERS = sorted(NODE_CLASS_MAPPINGS)
if PLACEHOLDERS:
    print(f"frontend_stub_nodes: placeholders for {PLACEHOLDERS}", flush=True)
