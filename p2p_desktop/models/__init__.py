"""Model loading: classifiers (torchvision + local weights), diffusion backbones, registry."""
