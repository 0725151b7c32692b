"""prunediff.models: VQ-VAE, DiT, flow matching and feature embedders (torch only).

Registries (keys are the exact YAML names):
    MODELS: DiT presets "DiT-{XL,L,B,S}/{2,4,8}" plus CPU presets "DiT-Tiny/2", "DiT-Micro/2".
    VQVAE_PRESETS: "vq-f4-c4" (32x32 CPU), "vq-f8-c4", "vq-f8-c8" (256x256).
    EMBEDDERS: "effnet_lite0", "clip", "dinov2", "inception", "pixels", "classifier"
    (a per-dataset CNN, models/classifier.py: weights=<saved file> required).
The flow-matching time convention (t = 0 noise, t = 1 data) is defined in
models/transport.py.
"""
from models.dit import MODELS, DiT, build_dit
from models.embedders import EMBEDDERS, Embedder, MissingWeightsError, build_embedder
from models.transport import (EMA, cfg_velocity_fn, per_sample_flow_loss, sample_ode,
                              training_loss)
from models.vqvae import (VQVAE, VQVAE_PRESETS, build_vqvae, fit_latent_scale, load_vqvae,
                          psnr, save_vqvae, vqvae_train_step)

__all__ = [
    "DiT", "EMA", "EMBEDDERS", "Embedder", "MODELS", "MissingWeightsError", "VQVAE",
    "VQVAE_PRESETS", "build_dit", "build_embedder", "build_vqvae", "cfg_velocity_fn",
    "fit_latent_scale", "load_vqvae", "per_sample_flow_loss", "psnr", "sample_ode",
    "save_vqvae", "training_loss", "vqvae_train_step",
]
