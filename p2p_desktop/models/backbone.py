"""The frozen latent diffusion backbone (Stable Diffusion 1.x/2.x architecture) of P2P and Diff-PGD.

A backbone is an ordinary diffusers folder on local disk (``model_index.json`` plus ``vae/``,
``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), the embedded ``demo`` bundle
(which is one of them), or a single-file ``.safetensors`` checkpoint with a local diffusers
config folder. Loading is offline and never runs code from the model files::

    bb = load_backbone("demo")                 # resources/models/demo, hashes verified
    bb = load_backbone("/models/sd15")         # a local diffusers folder
    bb = load_backbone("/models/sd15.safetensors", config_dir="/models/sd15-configs")

Components are loaded one by one (so a folder without a safety checker works), frozen
(``requires_grad=False``, ``eval()``), fp16 on CUDA and fp32 elsewhere unless ``dtype``
says otherwise, and cached per (folder, device, dtype) for the life of the process.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from p2p_desktop.errors import ModelError, UnsafeFileError

__all__ = ["Backbone", "load_backbone", "clear_backbone_cache", "check_backbone_folder",
           "COMPONENTS", "PICKLE_SUFFIXES"]

for _k in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE"):
    os.environ.setdefault(_k, "1")

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
WEIGHT_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES

# component -> (config file, weight file stems); the tokenizer has no weights.
COMPONENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "vae": ("config.json", ("diffusion_pytorch_model",)),
    "unet": ("config.json", ("diffusion_pytorch_model",)),
    "text_encoder": ("config.json", ("model",)),
    "tokenizer": ("tokenizer_config.json", ()),
    "scheduler": ("scheduler_config.json", ()),
}


@dataclass
class Backbone:
    """A loaded, frozen latent diffusion model (VAE + UNet + CLIP text encoder + DDPM schedule)."""

    vae: Any
    unet: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any  # diffusers.DDPMScheduler (the training noise schedule)
    device: str
    dtype: Any  # torch.dtype of the frozen components
    resolution: int  # image side in pixels = unet sample_size x VAE downsampling factor
    prediction_type: str  # "epsilon" or "v_prediction"
    scaling_factor: float
    name: str
    path: str
    shift_factor: float = 0.0
    weight_files: tuple[str, ...] = ()  # the files the weights were read from (for the hash)
    _sha256: str | None = field(default=None, repr=False)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @cached_property
    def alphas_cumprod(self):
        """ᾱ_t for t = 0..T-1 (float32, on the backbone's device)."""
        import torch

        return self.scheduler.alphas_cumprod.to(device=self.device, dtype=torch.float32)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def weights_sha256(self) -> str:
        """SHA-256 over the sorted (relative path, SHA-256) of the weight files loaded (computed once)."""
        if self._sha256 is None:
            self._sha256 = _weights_digest(Path(self.path), self.weight_files)
        return self._sha256

    def identity(self) -> dict[str, Any]:
        """Name, path, weight hash, prediction type and resolution, for reports and provenance."""
        return {"name": self.name, "path": self.path, "sha256": self.weights_sha256(),
                "prediction_type": self.prediction_type, "resolution": self.resolution}


# -- checks ---------------------------------------------------------------------------------
def _weights_digest(path: Path, names: tuple[str, ...] = ()) -> str:
    """SHA-256 over sorted ``relative path:sha256`` lines of every file a backbone is loaded from:
    weights (shards and their indexes included) AND configs, tokenizer files and model_index.json,
    so that changing ``beta_end`` or the VAE ``scaling_factor`` changes the hash as well."""
    from p2p_desktop.hashing import sha256_file

    if path.is_file():
        return sha256_file(path)
    files = sorted(path / n for n in names) if names else sorted(_loaded_files(path))
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path).as_posix()}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


def _walk(folder: Path) -> list[Path]:
    """Every file under ``folder``, following symlinked sub-folders (each real folder once)."""
    out: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        out += [Path(dirpath) / f for f in filenames]
    return out


def _loaded_files(folder: Path) -> list[Path]:
    """The files a folder backbone is read from: model_index.json and everything in the components."""
    out = [folder / "model_index.json"] if (folder / "model_index.json").is_file() else []
    for comp in COMPONENTS:
        if (folder / comp).is_dir():
            out += [p for p in _walk(folder / comp) if p.is_file()]
    return out


def _weight_file(sub: Path, stems: tuple[str, ...], allow_pickle: bool) -> tuple[str | None, bool]:
    """Find a component's weights: returns (variant or None, use_safetensors)."""
    for stem in stems:
        for variant in (None, "fp16"):
            name = stem + (f".{variant}" if variant else "")
            if (sub / f"{name}.safetensors").is_file():
                return variant, True
            index = sub / f"{name}.safetensors.index.json"
            if index.is_file():
                _check_index(index)
                return variant, True
    pickles = sorted(p.name for p in sub.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES) if sub.is_dir() else []
    if pickles:
        if not allow_pickle:
            raise UnsafeFileError(
                f"{sub.name}/ holds only pickle weights ({', '.join(pickles)}), which can run code when "
                "loaded; refused. Convert them to .safetensors"
            )
        plain = any(n.startswith(stems) and ".fp16." not in n for n in pickles)
        return (None if plain else "fp16"), False
    raise ModelError(
        f"backbone component '{sub.name}' has no weights: expected {sub / (stems[0] + '.safetensors')} "
        f"(copy the {sub.name}/ folder of a diffusers Stable Diffusion checkpoint there)"
    )


def _check_index(index: Path) -> None:
    """A sharded safetensors index may name only .safetensors shards inside its own folder."""
    import json

    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        shards = set((data.get("weight_map") or {}).values())
    except (OSError, ValueError, AttributeError, RecursionError) as exc:
        raise ModelError(f"{index.parent.name}/{index.name} is not a readable shard index ({exc})") from None
    if not shards or not all(isinstance(s, str) for s in shards):
        raise ModelError(f"{index.parent.name}/{index.name} names no weight shards")
    for shard in sorted(shards):
        if not shard.endswith(".safetensors"):
            raise UnsafeFileError(
                f"{index.parent.name}/{index.name} references the pickle shard {shard!r}, which can run code "
                "when loaded; refused. Convert it to .safetensors")
        target = (index.parent / shard)
        if "/" in shard or "\\" in shard or not target.is_file():
            raise ModelError(f"{index.parent.name}/{index.name} references {shard!r}, which is not a file "
                             f"in {index.parent}")


def _component_files(folder: Path, comp: str, variant: str | None, safe: bool) -> list[str]:
    """Relative paths of the weight files a component is loaded from (shards included)."""
    suffixes = (".safetensors",) if safe else PICKLE_SUFFIXES
    out = []
    for p in sorted((folder / comp).iterdir()):
        if not p.is_file() or p.suffix.lower() not in suffixes:
            continue
        if (f".{variant}." in p.name) == (variant is not None):
            out.append(p.relative_to(folder).as_posix())
    return out


def check_backbone_folder(folder: str | Path, allow_pickle: bool = False) -> dict[str, tuple[str | None, bool]]:
    """Refuse unsafe or incomplete diffusers folders; return {component: (variant, use_safetensors)}."""
    folder = Path(folder)
    if not folder.exists():
        raise ModelError(f"backbone folder not found: {folder}")
    if not folder.is_dir():
        raise ModelError(f"backbone {folder} is neither a diffusers folder nor a .safetensors checkpoint")
    code = sorted(p.relative_to(folder).as_posix() for p in _walk(folder) if p.suffix.lower() == ".py")
    if code:
        raise UnsafeFileError(
            f"backbone folder {folder} carries Python code ({', '.join(code[:3])}"
            f"{', …' if len(code) > 3 else ''}); custom pipeline code is never run. Remove the .py files "
            "or use a standard Stable Diffusion folder"
        )
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"{folder} is not a diffusers folder: model_index.json is missing "
            f"(expected {folder / 'model_index.json'} next to vae/, unet/, text_encoder/, tokenizer/, scheduler/)"
        )
    found: dict[str, tuple[str | None, bool]] = {}
    for comp, (config_name, stems) in COMPONENTS.items():
        sub = folder / comp
        if not sub.is_dir():
            raise ModelError(
                f"backbone component '{comp}' is missing: expected the folder {sub} "
                f"(copy {comp}/ from a diffusers Stable Diffusion 1.x/2.x checkpoint)"
            )
        if comp == "tokenizer":
            has_files = (sub / "tokenizer.json").is_file() or (
                (sub / "vocab.json").is_file() and (sub / "merges.txt").is_file())
            if not has_files:
                raise ModelError(
                    f"tokenizer files are missing: expected {sub / 'vocab.json'} and {sub / 'merges.txt'} "
                    f"(or {sub / 'tokenizer.json'})"
                )
            continue
        if not (sub / config_name).is_file():
            raise ModelError(f"backbone component '{comp}' is incomplete: {sub / config_name} is missing")
        if stems:
            found[comp] = _weight_file(sub, stems, allow_pickle)
    return found


# -- loading --------------------------------------------------------------------------------
_cache: dict[tuple[str, str, str], Backbone] = {}
_lock = threading.Lock()


def clear_backbone_cache() -> None:
    """Forget every loaded backbone (frees memory once no attack holds a reference)."""
    with _lock:
        _cache.clear()


def _resolve_dtype(dtype: Any, device: str):
    import torch

    if dtype is None:
        return torch.float16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
    try:
        return names[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}: choose float16, bfloat16 or float32") from None


def _resolve_spec(spec: str | Path) -> tuple[Path, str]:
    """A registered name (e.g. ``demo``) -> its verified folder; a path -> itself."""
    path = Path(str(spec)).expanduser()
    if path.exists() or os.sep in str(spec) or str(spec).endswith((".safetensors", ".ckpt")):
        return path, path.name
    from p2p_desktop.models.registry import resolve

    entry = resolve(str(spec), "backbone", "a diffusers Stable Diffusion folder, or a .safetensors checkpoint "
                    "with --backbone-config DIR")
    return entry.folder, entry.name


def _quiet_loaders() -> None:
    """No download progress bars from the libraries: our own progress reporting is the only one."""
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except (ImportError, AttributeError):  # pragma: no cover - older libraries
        pass


def _low_mem_kw() -> dict[str, Any]:
    """Ask for plain loading when ``accelerate`` is absent (avoids a warning; same result)."""
    import importlib.util

    return {} if importlib.util.find_spec("accelerate") else {"low_cpu_mem_usage": False}


def _transformers_dtype_kw(dtype) -> dict[str, Any]:
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def _freeze(module, device: str, dtype):
    if next(module.parameters()).dtype != dtype:  # loaded in another precision (single file)
        module.to(dtype=dtype)
    module.to(device=device)
    module.eval()
    module.requires_grad_(False)
    return module


def _load_folder(folder: Path, name: str, device: str, dtype, allow_pickle: bool) -> Backbone:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    found = check_backbone_folder(folder, allow_pickle)
    _quiet_loaders()
    common = {"local_files_only": True}

    def kw(comp: str) -> dict[str, Any]:
        variant, safe = found[comp]
        return {**common, "subfolder": comp, "use_safetensors": safe,
                **({"variant": variant} if variant else {})}

    check_configs(folder)
    check_parameter_counts(folder, found, getattr(dtype, "itemsize", 4))
    loaded = tuple(p.relative_to(folder).as_posix() for p in _loaded_files(folder))
    digest = _weights_digest(folder, loaded)  # hashed before loading: what is recorded is what is read
    diffusers_kw = {"torch_dtype": dtype, **_low_mem_kw()}
    try:
        with _library_warnings() as warned:
            vae, info_vae = AutoencoderKL.from_pretrained(str(folder), **kw("vae"), **diffusers_kw,
                                                          output_loading_info=True)
            unet, info_unet = UNet2DConditionModel.from_pretrained(str(folder), **kw("unet"), **diffusers_kw,
                                                                   output_loading_info=True)
            text_encoder, info_te = CLIPTextModel.from_pretrained(
                str(folder), trust_remote_code=False, output_loading_info=True, **kw("text_encoder"),
                **_transformers_dtype_kw(dtype))
            tokenizer = CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer", **common)
            scheduler = DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler", **common)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"backbone {folder} could not be loaded: {first}") from None
    for comp, info in (("vae", info_vae), ("unet", info_unet), ("text_encoder", info_te)):
        _check_loading_info(folder, comp, info)
    _check_warnings(str(folder), warned)
    backbone = _assemble(vae, unet, text_encoder, tokenizer, scheduler, device, dtype, name, str(folder))
    backbone.weight_files = loaded
    backbone._sha256 = digest
    return backbone


# Sizes far beyond any Stable Diffusion 1.x/2.x/XL configuration: refused before anything is built.
# Every size-like value (a number of tokens, positions, channels, heads, layers, groups, classes,
# timesteps, a kernel side) has a bound; a list (per block) is checked value by value, nested
# lists too. SD 1.5 / 2.1 / XL use: model_max_length 77, max_position_embeddings 77, hidden_size
# 768-1280, unet block_out_channels up to 1280, attention_head_dim up to 20 (64 per head),
# transformer_layers_per_block up to 10, sample_size 64-128, num_train_timesteps 1000.
_CONFIG_LIMITS = {
    "scheduler/scheduler_config.json": {"num_train_timesteps": 100_000},
    "unet/config.json": {"sample_size": 1024, "in_channels": 64, "out_channels": 64, "cross_attention_dim": 8192,
                         "block_out_channels": 8192, "layers_per_block": 16, "attention_head_dim": 1024,
                         "num_attention_heads": 256, "transformer_layers_per_block": 64,
                         "reverse_transformer_layers_per_block": 64, "norm_num_groups": 1024,
                         "num_class_embeds": 100_000, "projection_class_embeddings_input_dim": 65536,
                         "addition_time_embed_dim": 8192, "addition_embed_type_num_heads": 256,
                         "time_embedding_dim": 65536, "time_cond_proj_dim": 8192, "encoder_hid_dim": 8192,
                         "conv_in_kernel": 15, "conv_out_kernel": 15},
    "vae/config.json": {"sample_size": 8192, "latent_channels": 64, "block_out_channels": 8192,
                        "layers_per_block": 16, "in_channels": 16, "out_channels": 16, "norm_num_groups": 1024},
    "text_encoder/config.json": {"vocab_size": 1_000_000, "hidden_size": 8192, "intermediate_size": 65536,
                                 "num_hidden_layers": 128, "max_position_embeddings": 4096,
                                 "num_attention_heads": 256, "projection_dim": 8192},
    # the tokenizer pads every prompt to model_max_length tokens
    "tokenizer/tokenizer_config.json": {"model_max_length": 4096},
}
# Lists with one entry per block (or per timestep): their length is a size too.
_LIST_LIMITS = {"block_out_channels": 16, "down_block_types": 16, "up_block_types": 16, "layers_per_block": 16,
                "attention_head_dim": 16, "num_attention_heads": 16, "transformer_layers_per_block": 16,
                "reverse_transformer_layers_per_block": 16, "cross_attention_dim": 16, "sample_size": 3,
                "only_cross_attention": 16, "trained_betas": 100_000}
# Files read whole while the backbone is built: a config is a few KB, SD's vocab.json 1.6 MB.
_CONFIG_FILE_LIMIT = 4 * 2**20
_TOKENIZER_FILE_LIMIT = 64 * 2**20
_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "added_tokens.json", "special_tokens_map.json")


def _bounded_values(value, depth: int = 0):
    """The numbers in a config value: the value itself, or those of a (nested) list."""
    if isinstance(value, list) and depth < 3:
        for v in value:
            yield from _bounded_values(v, depth + 1)
    else:
        yield value


def _read_config(folder: Path, rel: str) -> dict | None:
    path = folder / rel
    if not path.is_file():
        return None
    import json

    size = path.stat().st_size
    if size > _CONFIG_FILE_LIMIT:
        raise ModelError(f"{rel} of backbone {folder} is {size / 2**20:.1f} MiB (limit "
                         f"{_CONFIG_FILE_LIMIT // 2**20} MiB for a config); refused before reading it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelError(f"{rel} of backbone {folder} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{rel} of backbone {folder} is not a JSON object")
    return data


def _held_parameters(folder: Path, files: list[str]) -> int:
    """Elements in the tensors of these safetensors files, from their headers (nothing is loaded)."""
    import math

    from safetensors import safe_open

    total = 0
    for rel in files:
        with safe_open(str(folder / rel), framework="pt") as fh:
            total += sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())
    return total


def check_parameter_counts(folder: Path, found: dict[str, tuple[str | None, bool]], itemsize: int = 4) -> None:
    """A component whose config describes a larger model than its weights hold, and one larger
    than the memory available, is refused before it is built: sizes within their bounds one by
    one can still multiply to hundreds of GB (a text encoder of 128 layers of width 8,192).
    Counted on the meta device (nothing allocated) against the safetensors headers; a smaller
    mismatch is left to the weights check after loading (which names the missing keys). Pickle
    weights are not counted."""
    import json
    import warnings

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    builders = {
        "vae": lambda path: AutoencoderKL.from_config(json.loads(path.read_text(encoding="utf-8"))),
        "unet": lambda path: UNet2DConditionModel.from_config(json.loads(path.read_text(encoding="utf-8"))),
        "text_encoder": lambda path: CLIPTextModel(CLIPTextConfig.from_json_file(str(path))),
    }
    for comp, build in builders.items():
        variant, safe = found.get(comp, (None, False))
        files = _component_files(folder, comp, variant, safe) if safe else []
        if not files:
            continue
        try:
            held = _held_parameters(folder, files)
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                described = sum(p.numel() for p in build(folder / comp / "config.json").parameters())
        except Exception:  # noqa: BLE001 - a config that cannot be built: the real load says why
            continue
        if described <= held:
            continue
        from p2p_desktop.io.memory import memory_budget

        need, budget = described * itemsize, memory_budget()
        if budget is not None and need > budget:
            raise ModelError(f"{comp}/config.json of backbone {folder} describes {described:,} parameters "
                             f"({need / 2**30:.1f} GiB) but {comp}/ weights hold {held:,} (the bound) and "
                             f"{budget / 2**30:.1f} GiB of memory is available; refused before building the model")


def check_configs(folder: Path) -> None:
    """Refuse configs whose sizes would exhaust memory while the model is built or run (one clear
    line naming the file, the key, the value and the bound), before anything is built."""
    configs: dict[str, dict] = {}
    for rel, limits in _CONFIG_LIMITS.items():
        data = _read_config(folder, rel)
        if data is None:
            continue
        configs[rel] = data
        for key, value in data.items():
            if isinstance(value, list) and key in _LIST_LIMITS and len(value) > _LIST_LIMITS[key]:
                raise ModelError(f"{rel} of backbone {folder}: {key} has {len(value):,} entries (limit "
                                 f"{_LIST_LIMITS[key]:,}); refused before building the model")
        for key, limit in limits.items():
            for v in _bounded_values(data.get(key)):
                if v is None:
                    continue
                if (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= limit
                        or v != int(v)):
                    raise ModelError(f"{rel} of backbone {folder}: {key} = {v!r} is outside 1..{limit:,} "
                                     "(a whole number); refused before building the model")
    tok = configs.get("tokenizer/tokenizer_config.json")
    if tok is not None:
        length = tok.get("model_max_length")
        if length is None:
            raise ModelError(f"tokenizer/tokenizer_config.json of backbone {folder}: model_max_length is missing "
                             "(the tokenizer would pad every prompt to 10^30 tokens); refused before building "
                             "the model")
        te = configs.get("text_encoder/config.json")
        positions = (te or {}).get("max_position_embeddings", 77)
        if te is not None and length > positions:
            raise ModelError(f"tokenizer/tokenizer_config.json of backbone {folder}: model_max_length = {length!r} "
                             f"is larger than text_encoder/config.json's max_position_embeddings = {positions!r} "
                             "(the bound); refused before building the model")
    for name in _TOKENIZER_FILES:
        path = folder / "tokenizer" / name
        if path.is_file() and path.stat().st_size > _TOKENIZER_FILE_LIMIT:
            raise ModelError(f"tokenizer/{name} of backbone {folder} is {path.stat().st_size / 2**20:.0f} MiB "
                             f"(limit {_TOKENIZER_FILE_LIMIT // 2**20} MiB); refused before reading it")


def _check_loading_info(folder: Path, comp: str, info: dict) -> None:
    """Refuse a component whose weights do not match its architecture exactly."""
    def names(key: str) -> list[str]:
        return sorted(str(k if not isinstance(k, tuple) else k[0]) for k in (info.get(key) or ()))

    missing, unexpected, mismatched = names("missing_keys"), names("unexpected_keys"), names("mismatched_keys")
    errors = [str(e) for e in (info.get("error_msgs") or ())]
    if missing or unexpected or mismatched or errors:
        parts = []
        for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong-shape", mismatched),
                            ("errors", errors)):
            if items:
                parts.append(f"{len(items)} {what} ({', '.join(items[:3])}{', …' if len(items) > 3 else ''})")
        raise ModelError(f"backbone {folder}: {comp}/ weights do not match its config: {'; '.join(parts)}; "
                         "refused (an incomplete checkpoint would produce garbage)")


_WARNING_MARKS = ("newly initialized", "were not used when initializing", "not initialized from the model")


class _Collect:
    def __init__(self) -> None:
        self.messages: list[str] = []


def _library_warnings():
    """Capture (and keep off stderr) the loaders' log records while loading."""
    import contextlib
    import logging

    @contextlib.contextmanager
    def scope():
        collected = _Collect()

        class Handler(logging.Handler):
            def emit(self, record):
                collected.messages.append(record.getMessage())

        handler = Handler(level=logging.WARNING)
        loggers = [logging.getLogger(n) for n in ("diffusers", "transformers")]
        saved = [(lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
        for lg in loggers:
            lg.handlers = [handler]
            lg.propagate = False
            lg.setLevel(logging.WARNING)
        try:
            yield collected
        finally:
            for lg, (level, propagate, handlers) in zip(loggers, saved):
                lg.handlers, lg.propagate = handlers, propagate
                lg.setLevel(level)

    return scope()


def _check_warnings(what: str, collected: _Collect) -> None:
    bad = [m for m in collected.messages if any(k in m for k in _WARNING_MARKS)]
    if bad:
        first = bad[0].strip().splitlines()[0][:200]
        raise ModelError(f"backbone {what}: weights missing or unexpected ({first}); refused (an incomplete "
                         "checkpoint would produce garbage)")


def _load_single_file(path: Path, config_dir: str | Path | None, device: str, dtype,
                      allow_pickle: bool) -> Backbone:
    if not path.is_file():
        raise ModelError(f"backbone checkpoint not found: {path}")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise UnsafeFileError(
            f"{path.name} is a pickle checkpoint, which can run code when loaded; refused. Use the "
            ".safetensors version"
        )
    if suffix not in (".safetensors",) + PICKLE_SUFFIXES:
        raise ModelError(f"{path.name}: unsupported checkpoint format {suffix!r} (use .safetensors)")
    if config_dir is None:
        raise ModelError(
            f"{path.name} is a single-file checkpoint: also give a local diffusers config folder "
            "(--backbone-config DIR, a Stable Diffusion folder with model_index.json and the component "
            "config.json files); nothing is downloaded"
        )
    config_dir = Path(config_dir)
    if not (config_dir / "model_index.json").is_file():
        raise ModelError(f"config folder {config_dir}: model_index.json is missing")
    code = sorted(p.name for p in _walk(config_dir) if p.suffix.lower() == ".py")
    if code:
        raise UnsafeFileError(f"config folder {config_dir} carries Python code ({', '.join(code[:3])}); refused")
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    _quiet_loaders()
    check_configs(config_dir)
    from p2p_desktop.hashing import sha256_file

    h = hashlib.sha256(f"{path.name}:{sha256_file(path)}\n".encode())
    h.update(_weights_digest(config_dir, tuple(p.relative_to(config_dir).as_posix()
                                               for p in _loaded_files(config_dir))).encode())
    try:
        with _library_warnings() as warned:
            pipe = StableDiffusionPipeline.from_single_file(
                str(path), config=str(config_dir), local_files_only=True, safety_checker=None,
                requires_safety_checker=False, load_safety_checker=False, torch_dtype=dtype)
            scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"checkpoint {path.name} could not be loaded with configs from {config_dir}: "
                         f"{first}") from None
    _check_warnings(path.name, warned)
    backbone = _assemble(pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer, scheduler, device, dtype,
                         path.stem, str(path))
    backbone._sha256 = h.hexdigest()  # the checkpoint and every config read with it
    return backbone


def _assemble(vae, unet, text_encoder, tokenizer, scheduler, device, dtype, name, path) -> Backbone:
    import torch

    for module in (unet, text_encoder):
        _freeze(module, device, dtype)
    # the VAE config's force_upcast: its fp16 activations overflow, so it runs in fp32 (as diffusers does)
    upcast = dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
    _freeze(vae, device, torch.float32 if upcast else dtype)
    _check_vocabulary(name, tokenizer, text_encoder)
    prediction_type = str(scheduler.config.get("prediction_type", "epsilon"))
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ModelError(f"backbone {name}: prediction type {prediction_type!r} is not supported "
                         "(epsilon or v_prediction)")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    sample = unet.config.sample_size
    sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    scaling = float(getattr(vae.config, "scaling_factor", None) or 0.18215)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    return Backbone(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                    device=device, dtype=dtype, resolution=int(sample) * factor,
                    prediction_type=prediction_type, scaling_factor=scaling, shift_factor=shift,
                    name=name, path=path)


def _check_vocabulary(name, tokenizer, text_encoder) -> None:
    """The tokenizer and the text encoder's embedding table must describe the same vocabulary: a
    larger tokenizer indexes past the table, a smaller one cannot name every row (nearest words)."""
    table = int(text_encoder.get_input_embeddings().weight.shape[0])
    size = len(tokenizer)
    if size != table:
        raise ModelError(f"backbone {name}: tokenizer/ has {size:,} tokens but text_encoder/ has {table:,} "
                         "embeddings; they must come from the same checkpoint; refused")
    length = getattr(tokenizer, "model_max_length", None)
    positions = int(getattr(text_encoder.config, "max_position_embeddings", 0) or 0)
    if not isinstance(length, int) or not 0 < length <= positions:
        # e.g. a tokenizer config without model_max_length: transformers then pads prompts to 10^30 tokens
        raise ModelError(f"backbone {name}: the tokenizer's model_max_length {length!r} is outside 1.."
                         f"{positions:,} (the text encoder's max_position_embeddings); refused")


def load_backbone(spec: str | Path, device: str = "auto", config_dir: str | Path | None = None,
                  dtype: Any = None, allow_pickle: bool = False) -> Backbone:
    """Load (or reuse) a frozen backbone: ``demo``, a diffusers folder, or a single ``.safetensors``.

    Raises :class:`ModelError` naming the missing file and where it belongs, and
    :class:`UnsafeFileError` for folders with ``*.py`` files or pickle-only weights
    (unless ``allow_pickle``).
    """
    from p2p_desktop.device import resolve_device

    dev = resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, dev)
    path, name = _resolve_spec(spec)
    resolved = str(path.resolve())
    key = (resolved, dev, str(torch_dtype))
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        if path.is_file() or path.suffix.lower() in (".safetensors", ".ckpt"):
            backbone = _load_single_file(path, config_dir, dev, torch_dtype, allow_pickle)
        else:
            backbone = _load_folder(path, name, dev, torch_dtype, allow_pickle)
        backbone.path = resolved
        _cache[key] = backbone
        return backbone
