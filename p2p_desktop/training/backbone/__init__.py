"""Train the demo diffusion backbone: a small Stable-Diffusion-format model on synthetic phantoms.

Stable Diffusion cannot be downloaded here, so the demo bundle ships its own latent diffusion
model with SD's exact component classes and folder layout (``model_index.json``, ``vae/``,
``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, safetensors only); the code path
that serves it is the one that serves SD 1.5. It is a synthetic demo, not a medical model.

Architecture (128×128 RGB in/out, grey replicated to three channels):

- VAE (:class:`diffusers.AutoencoderKL`): two levels, ×2 downsampling to a 64×64×4 latent
  (speckle does not survive ×4), no mid-block attention; ``scaling_factor`` = 1/std of the
  training latents (measured).
- UNet (:class:`diffusers.UNet2DConditionModel`) on 64×64×4: widths (32, 64, 64), one layer
  per block, cross-attention on the 16×16 level and the mid block only (self-attention at
  32×32 costs ~4× the whole UNet on a CPU), plus the attention-pooled prompt added to the
  time embedding (``addition_embed_type="text"``, FiLM scale/shift in every resnet) so the
  prompt reaches every level.
- Text encoder (:class:`transformers.CLIPTextModel`): 64 wide, 3 layers, 77 positions, over
  the demo tokenizer (:func:`p2p_desktop.models.tokenizer.build_clip_tokenizer_files`).
- Scheduler: SD 1.5's DDPM schedule (1000 steps, scaled-linear 0.00085..0.012, ε-prediction).

Training (CPU, one thread; the budget ``--minutes`` counts CPU time of the process, which is
the wall time on an idle core). Phantoms are generated once, kept in memory and cached in the
scratch folder.

1. VAE on seeds ``0 .. n_train-1`` (label ``seed % 3``): L1 + light SSIM + tiny KL, random
   64-px crops, then full images.
2. Every phantom of the UNet set is encoded once (posterior mean × scaling). The UNet set is
   seeds ``0 .. n_pair_seeds-1``, each drawn as all three classes — the generator keeps a
   seed's breast and speckle across labels, so a triplet differs only by its mass. UNet and
   text encoder train jointly on the ε-prediction loss, one t and one noise draw per triplet
   (the prompt is the only thing that tells the three apart at high t; with unpaired
   phantoms the prompt signal drowned in speckle and the model learned to ignore it). t comes
   from ``[0, 50)`` (P2P's range) 20 % of the time, from ``[750, 1000)`` (where a mass fades
   into the noise) 40 %, else from ``[0, 1000)``; the loss is weighted by
   ``clamp(1/SNR(t), 1, 30)`` (x0 error at high t). Prompts: the phantom's descriptor prompt
   (60 %), its bare class prompt (30 %) or ``""`` (10 %, the empty prompt of Diff-PGD).
   The text encoder stays frozen for the first half of the phase (as SD's CLIP is frozen):
   trained from the start, it collapsed every prompt onto one embedding before the UNet could
   use any.

The learning rate follows a cosine over each phase's CPU-time budget. A checkpoint goes to
``--scratch`` every minute; re-running the same command resumes from it.

Quality (:func:`evaluate_backbone`, on held-out seeds ``1_000_000 ..``): VAE round-trip SSIM;
SSIM of the one-step x0 estimate from t ∈ {10, 25, 49} (the P2P regime); and how much a
different class prompt changes a denoised image compared with a different noise seed.

The package, one module per job: :mod:`.model` (components), :mod:`.data` (phantoms, pixel
space, latents), :mod:`.loops` (the plan, the VAE and UNet phases), :mod:`.checkpoint`
(resumable state), :mod:`.card` (the finished folder and its card), :mod:`.evaluation` (quality
figures) and :mod:`.cli` (``main``).

Usage::

    python -m p2p_desktop.training.backbone --out resources/models/demo [--minutes M] [--seed S]

The folder is built in a temporary sibling and moved into place when complete.
"""

from p2p_desktop.training.backbone.card import replace_folder, save_backbone, write_card
from p2p_desktop.training.backbone.cli import main
from p2p_desktop.training.backbone.data import (
    EVAL_SEED_START,
    TEST_SEED_START,
    TRAIN_SEED_START,
    PhantomData,
    cached_data,
    encode_latents,
    load_paired_phantom_data,
    load_phantom_data,
    to_grey,
    to_model_space,
)
from p2p_desktop.training.backbone.evaluation import (
    evaluate_backbone,
    load_parts,
    unet_step_seconds,
)
from p2p_desktop.training.backbone.loops import TrainingPlan, train_backbone
from p2p_desktop.training.backbone.model import (
    LATENT_SIZE,
    RESOLUTION,
    SCHEDULER_CONFIG,
    TEXT_ENCODER_CONFIG,
    UNET_CONFIG,
    VAE_CONFIG,
    build_components,
    parameter_counts,
)

__all__ = [
    "RESOLUTION",
    "LATENT_SIZE",
    "TRAIN_SEED_START",
    "EVAL_SEED_START",
    "TEST_SEED_START",
    "VAE_CONFIG",
    "UNET_CONFIG",
    "TEXT_ENCODER_CONFIG",
    "SCHEDULER_CONFIG",
    "TrainingPlan",
    "PhantomData",
    "load_phantom_data",
    "load_paired_phantom_data",
    "to_model_space",
    "to_grey",
    "encode_latents",
    "build_components",
    "parameter_counts",
    "train_backbone",
    "save_backbone",
    "evaluate_backbone",
    "unet_step_seconds",
    "write_card",
    "main",
    "cached_data",
    "load_parts",
    "replace_folder",
]
