"""Warnings for inputs far from what a classifier was trained on.

A classifier's verdict — and so an attack's "success" — means little on an image unlike its
training data: an RGB colour-Doppler frame with burned-in text given to a classifier trained on
grey B-mode phantoms, or an image whose size or photometry the model card rules out. The model
card tells what the classifier saw, either with an explicit ``training_input`` entry::

    "training_input": {"colour": false, "burned_in_text": false, "size": [128, 128]}

or, for the bundled demo models (``"synthetic_demo": true``), grey square phantoms of
``input_size`` pixels without text. :func:`input_warnings` returns one readable line per
mismatch (empty when the card tells nothing or all is well); the runner adds them to the
run's notes, the CLI prints them as warnings, the report and the GUI show them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["WARNING_PREFIX", "training_input", "input_warnings", "coloured_fraction"]

#: Every line starts so (the CLI prints these as warnings, the GUI and report highlight them).
WARNING_PREFIX = "input unlike the classifier's training data: "
#: A pixel counts as coloured when its channels differ by more than this ([0,1] units)...
CHROMA = 0.08
#: ...and an image as colour when more than this fraction of its pixels are coloured.
COLOUR_FRACTION = 0.005
#: Aspect ratios (long side / short side) beyond this ratio of the training images' one warn.
ASPECT_TOLERANCE = 1.25


def training_input(card: Any) -> dict[str, Any] | None:
    """What the card says about the training images: ``{"colour", "burned_in_text", "size"}``
    (keys it cannot tell are left out), or None when it says nothing."""
    extra = dict(getattr(card, "extra", None) or {})
    told = extra.get("training_input")
    if isinstance(told, dict):
        return {k: told[k] for k in ("colour", "burned_in_text", "size") if k in told}
    if extra.get("synthetic_demo"):
        side = int(getattr(card, "input_size", 0) or 0)
        return {"colour": False, "burned_in_text": False, "size": [side, side] if side else None}
    return None


def coloured_fraction(image: np.ndarray) -> float:
    """Fraction of pixels whose colour channels differ by more than CHROMA (0 for grey)."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] < 3:
        return 0.0
    rgb = arr[..., :3]
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    return float(np.mean(chroma > CHROMA))


def input_warnings(study: Any, card: Any) -> list[str]:
    """One line per way ``study`` differs from what ``card``'s classifier was trained on."""
    seen = training_input(card)
    if not seen:
        return []
    name = getattr(card, "name", "the classifier")
    out: list[str] = []
    if seen.get("colour") is False:
        frac = coloured_fraction(study.image)
        if frac > COLOUR_FRACTION:
            out.append(f"{100 * frac:.1f}% of the pixels are in colour (e.g. a colour-Doppler overlay), but {name} "
                       "was trained on grey images")
        elif str(getattr(study, "photometric", "")).upper() == "MONOCHROME1":
            out.append(f"the image is MONOCHROME1 (inverted grey), but {name} was trained on MONOCHROME2 grey images")
    metadata = getattr(study, "metadata", None)
    burned = str(getattr(metadata, "burned_in_annotation", "") or "").upper()
    if seen.get("burned_in_text") is False and burned == "YES":
        out.append(f"the image carries burned-in text (BurnedInAnnotation YES), which {name} never saw in training")
    size = seen.get("size")
    if size and len(size) == 2 and all(size):
        tw, th = int(size[0]), int(size[1])
        w, h = int(study.width), int(study.height)
        aspect, trained = max(w, h) / max(1, min(w, h)), max(tw, th) / max(1, min(tw, th))
        if aspect > trained * ASPECT_TOLERANCE:
            out.append(f"the image is {w}×{h} (aspect {aspect:.2f}), but {name} was trained on {tw}×{th} images: "
                       "it is squeezed to that shape")
        elif min(w, h) * 2 < min(tw, th):
            out.append(f"the image is {w}×{h}, under half the {tw}×{th} of {name}'s training images")
    return [WARNING_PREFIX + line for line in out]
