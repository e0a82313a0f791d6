"""Training scripts for the embedded demo models (offline, on CPU, on synthetic phantoms).

- ``python -m p2p_desktop.training.classifiers --out resources/models`` — demo classifiers.
- ``python -m p2p_desktop.training.backbone --out resources/models/demo`` — demo diffusion
  backbone (a diffusers Stable-Diffusion-format folder).
"""
