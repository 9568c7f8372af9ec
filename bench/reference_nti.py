"""The authors' null-text inversion (``NullInversion`` of ``null_text_w_ptp.ipynb``), transcribed for a raw UNet.

Only the model call changed: ``unet(x_t, t, context) -> eps`` instead of a diffusers UNet. Everything else keeps
the reference's structure *and cost*: weight gradients are computed (the notebook never disables them), the
conditional prediction is evaluated again inside the batched guided step, and the same Adam/early-stop logic.
Used by the benchmark as the baseline; never shipped (``.comfyignore``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as nnf


class ReferenceNullInversion:
    def __init__(self, unet: Callable, alphas_cumprod: torch.Tensor, num_ddim_steps: int, guidance_scale: float) -> None:
        self.unet = unet
        self.alphas_cumprod = alphas_cumprod.to(torch.float32)
        self.final_alpha_cumprod = self.alphas_cumprod[0]
        self.num_train_timesteps = alphas_cumprod.shape[0]
        self.num_ddim_steps = num_ddim_steps
        self.guidance_scale = guidance_scale
        step_ratio = self.num_train_timesteps // num_ddim_steps
        self.timesteps = (torch.arange(0, num_ddim_steps) * step_ratio).flip(0) + 1  # "leading", steps_offset 1

    def prev_step(self, model_output, timestep: int, sample):
        prev_timestep = timestep - self.num_train_timesteps // self.num_ddim_steps
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        pred_original_sample = (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
        pred_sample_direction = (1 - alpha_prod_t_prev) ** 0.5 * model_output
        return alpha_prod_t_prev ** 0.5 * pred_original_sample + pred_sample_direction

    def next_step(self, model_output, timestep: int, sample):
        timestep, next_timestep = min(timestep - self.num_train_timesteps // self.num_ddim_steps, 999), timestep
        alpha_prod_t = self.alphas_cumprod[timestep] if timestep >= 0 else self.final_alpha_cumprod
        alpha_prod_t_next = self.alphas_cumprod[next_timestep]
        beta_prod_t = 1 - alpha_prod_t
        next_original_sample = (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
        next_sample_direction = (1 - alpha_prod_t_next) ** 0.5 * model_output
        return alpha_prod_t_next ** 0.5 * next_original_sample + next_sample_direction

    def get_noise_pred_single(self, latents, t: int, context):
        return self.unet(latents, t, context)

    def get_noise_pred(self, latents, t: int, is_forward: bool, context):
        latents_input = torch.cat([latents] * 2)
        guidance_scale = 1 if is_forward else self.guidance_scale
        noise_pred = self.unet(latents_input, t, context)
        noise_pred_uncond, noise_prediction_text = noise_pred.chunk(2)
        noise_pred = noise_pred_uncond + guidance_scale * (noise_prediction_text - noise_pred_uncond)
        if is_forward:
            return self.next_step(noise_pred, t, latents)
        return self.prev_step(noise_pred, t, latents)

    @torch.no_grad()
    def ddim_loop(self, latent, cond_embeddings):
        all_latent = [latent]
        latent = latent.clone().detach()
        for i in range(self.num_ddim_steps):
            t = int(self.timesteps[len(self.timesteps) - i - 1])
            noise_pred = self.get_noise_pred_single(latent, t, cond_embeddings)
            latent = self.next_step(noise_pred, t, latent)
            all_latent.append(latent)
        return all_latent

    def null_optimization(self, latents, uncond_embeddings, cond_embeddings, num_inner_steps: int, epsilon: float):
        uncond_embeddings_list = []
        iterations = []
        latent_cur = latents[-1]
        for i in range(self.num_ddim_steps):
            uncond_embeddings = uncond_embeddings.clone().detach()
            uncond_embeddings.requires_grad = True
            optimizer = torch.optim.Adam([uncond_embeddings], lr=1e-2 * (1. - i / 100.))
            latent_prev = latents[len(latents) - i - 2]
            t = int(self.timesteps[i])
            with torch.no_grad():
                noise_pred_cond = self.get_noise_pred_single(latent_cur, t, cond_embeddings)
            j = 0
            for j in range(num_inner_steps):
                noise_pred_uncond = self.get_noise_pred_single(latent_cur, t, uncond_embeddings)
                noise_pred = noise_pred_uncond + self.guidance_scale * (noise_pred_cond - noise_pred_uncond)
                latents_prev_rec = self.prev_step(noise_pred, t, latent_cur)
                loss = nnf.mse_loss(latents_prev_rec, latent_prev)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_item = loss.item()
                if loss_item < epsilon + i * 2e-5:
                    break
            iterations.append(j + 1)
            uncond_embeddings_list.append(uncond_embeddings[:1].detach())
            with torch.no_grad():
                context = torch.cat([uncond_embeddings, cond_embeddings])
                latent_cur = self.get_noise_pred(latent_cur, t, False, context)
        return uncond_embeddings_list, iterations, latent_cur
