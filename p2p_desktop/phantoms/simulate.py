"""B-mode image formation for the phantoms: a linear probe seen as a convolution model.

The received analytic (IQ) signal is the scatterer field convolved with the pulse-echo point
spread function (PSF)::

    s(z, x) = sum  a(z', x') T(z', x') h(z - z', x - x')  +  electronic noise
    h(z, x) = exp(-z²/2σz² - x²/2σx(z)²) · exp(i·2π·f_iq·z)

``a`` holds complex Gaussian scatterers (amplitude from the tissue's echogenicity, sparse
where the scatterer density is low) plus coherent specular reflectors; ``T`` is the
round-trip attenuation ``10^(-2 f0 ∫α dz / 20)`` integrated down each beam line, which is what
makes shadows below attenuating masses and enhancement below cysts. The RF PSF is a Gaussian
envelope times cos(2π f0 t); its analytic signal after IQ demodulation keeps the residual
carrier ``f_iq``. The lateral width σx(z) narrows at the transmit focus. The convolution is
done with FFTs (three lateral widths blended by depth). Then: envelope |s|, partial time-gain
compensation, the scanner's mild speckle smoothing, log compression to a dynamic range and a
grey map to [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from p2p_desktop.phantoms.anatomy import ALPHA_GLAND, Grid, TissueMaps

__all__ = ["sample_imaging", "psf_transfer", "speckle_envelope", "form_bmode"]

_SPEED_MM_PER_US = 1.54
_LATERAL_BANDS = (1.0, 1.7, 2.6)  # lateral PSF widths blended by depth, × σx at the focus


def sample_imaging(rng: np.random.Generator, depth_mm: float) -> dict:
    """Draw the probe and display settings of one acquisition."""
    nodes = rng.standard_normal(6)
    return {
        "f0_mhz": float(rng.uniform(7.0, 11.0)),
        "sigma_axial_mm": float(rng.uniform(0.18, 0.28)),
        "sigma_lateral_mm": float(rng.uniform(0.36, 0.55)),
        "focus_mm": float(rng.uniform(0.35, 0.6) * depth_mm),
        "focal_zone_mm": float(rng.uniform(8.0, 14.0)),
        "iq_residual_cyc_per_mm": float(rng.uniform(0.0, 0.6)),
        "tgc_compensation": float(rng.uniform(0.75, 0.95)),
        "tgc_ripple_db": [float(v) for v in 1.5 * nodes],
        "noise_db": float(rng.uniform(-78.0, -64.0)),
        "gain_db": float(rng.uniform(-4.0, 4.0)),
        "dynamic_range_db": float(rng.uniform(50.0, 60.0)),
        "gamma": float(rng.uniform(1.6, 2.3)),
        "smoothing": float(rng.uniform(0.35, 0.7)),
    }


def psf_transfer(shape: tuple[int, int], dz: float, dx: float, sigma_z: float, sigma_x: float,
                 f_iq: float = 0.0) -> np.ndarray:
    """FFT-domain transfer function of the analytic PSF, normalised to unit energy
    (white unit-variance scatterers give unit-variance IQ). Sizes in mm; shape in samples.

    The PSF is sampled in space and cut at 4σ (then transformed), so a PSF narrower than a
    pixel keeps compact support instead of ringing across the image."""
    def axis(n: int, d: float, sigma: float, f: float) -> np.ndarray:
        pos = sfft.fftfreq(n, d=1.0 / n) * d  # wrapped sample positions, mm
        h = np.exp(-0.5 * (pos / sigma) ** 2) * (np.abs(pos) <= 4 * sigma + 0.5 * d)
        h = h * np.exp(2j * math.pi * f * pos)
        h /= math.sqrt(float(np.sum(np.abs(h) ** 2)))
        return sfft.fft(h)

    hz = axis(shape[0], dz, sigma_z, f_iq).astype(np.complex64)
    hx = axis(shape[1], dx, sigma_x, 0.0).astype(np.complex64)
    return hz[:, None] * hx[None, :]


def _complex_normal(rng: np.random.Generator, shape) -> np.ndarray:
    pairs = rng.standard_normal((*shape, 2), dtype=np.float32)
    pairs *= np.float32(1 / math.sqrt(2))
    return pairs.view(np.complex64)[..., 0]


def speckle_envelope(echo: np.ndarray, density: np.ndarray, grid: Grid, rng: np.random.Generator,
                     sigma_z: float = 0.2, sigma_x: float = 0.4) -> np.ndarray:
    """Envelope of diffuse scatterers alone (no attenuation, no specular echoes): the speckle
    model used by :func:`form_bmode`, exposed for checks of its statistics."""
    amp = np.sqrt(echo / np.maximum(density, 1e-3))
    keep = rng.random(echo.shape) < density
    field = _complex_normal(rng, echo.shape) * (amp * keep).astype(np.float32)
    h = psf_transfer(echo.shape, grid.dz, grid.dx, sigma_z, sigma_x)
    return np.abs(sfft.ifft2(sfft.fft2(field) * h)).astype(np.float32)


def form_bmode(maps: TissueMaps, grid: Grid, imaging: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Simulate the B-mode image of ``maps``.

    Returns ``(image, envelope)``: the displayed float32 grey image in [0, 1] and the
    time-gain-compensated envelope before log compression (same shape, linear amplitude).
    """
    H, W = grid.rows, grid.cols
    f0 = imaging["f0_mhz"]
    sz, sx = imaging["sigma_axial_mm"], imaging["sigma_lateral_mm"]
    z = grid.z

    # 1. Round-trip attenuation down each beam line (dB), blurred by the beam width.
    dz_cm = grid.dz / 10.0
    att_db = 2.0 * f0 * (np.cumsum(maps.alpha, axis=0) - 0.5 * maps.alpha) * dz_cm
    att_db = gaussian_filter1d(att_db, sigma=max(sx / grid.dx, 0.5), axis=1, mode="nearest")
    trans = np.power(10.0, -att_db / 20.0)

    # 2. Scatterer field: complex Gaussian scatterers (sparse where density < 1) + specular.
    pad_r = int(math.ceil(4 * sz / grid.dz)) + 2
    pad_c = int(math.ceil(4 * sx * _LATERAL_BANDS[-1] / grid.dx)) + 2
    shape = (sfft.next_fast_len(H + 2 * pad_r), sfft.next_fast_len(W + 2 * pad_c))
    density = np.clip(maps.density, 1e-3, 1.0)
    amp = np.sqrt(maps.echo / density) * trans
    spec = maps.specular * trans
    noise_amp = 10.0 ** (imaging["noise_db"] / 20.0)
    n = _complex_normal(rng, shape)
    keep = rng.random(shape, dtype=np.float32)
    noise = _complex_normal(rng, shape)
    amp_p = np.pad(amp, ((pad_r, shape[0] - H - pad_r), (pad_c, shape[1] - W - pad_c)), mode="edge")
    dens_p = np.pad(density, ((pad_r, shape[0] - H - pad_r), (pad_c, shape[1] - W - pad_c)), mode="edge")
    spec_p = np.zeros(shape, dtype=np.float32)
    spec_p[pad_r:pad_r + H, pad_c:pad_c + W] = spec
    field = n * (amp_p * (keep < dens_p)).astype(np.float32) + spec_p + np.float32(noise_amp) * noise

    # 3. Convolution with the depth-dependent PSF (FFT; lateral width blended by depth).
    spectrum = sfft.fft2(field)
    zp = (np.arange(shape[0]) - pad_r + 0.5) * grid.dz
    width = np.sqrt(1.0 + ((zp - imaging["focus_mm"]) / imaging["focal_zone_mm"]) ** 2)
    width = np.clip(width, _LATERAL_BANDS[0], _LATERAL_BANDS[-1])
    iq = np.zeros(shape, dtype=np.complex64)
    for k, band in enumerate(_LATERAL_BANDS):
        weight = np.interp(width, _LATERAL_BANDS, np.eye(len(_LATERAL_BANDS))[k]).astype(np.float32)
        if not weight.any():
            continue
        h = psf_transfer(shape, grid.dz, grid.dx, sz, sx * band, imaging["iq_residual_cyc_per_mm"])
        iq += weight[:, None] * sfft.ifft2(spectrum * h)
    iq = iq[pad_r:pad_r + H, pad_c:pad_c + W]

    # 4. Envelope, partial time-gain compensation (with the operator's slider ripple).
    ripple = np.interp(z[:, 0], np.linspace(0, grid.depth_mm, len(imaging["tgc_ripple_db"])),
                       imaging["tgc_ripple_db"])[:, None]
    tgc_db = imaging["tgc_compensation"] * 2.0 * f0 * ALPHA_GLAND * (z / 10.0) + ripple
    env = np.abs(iq) * np.power(10.0, tgc_db / 20.0)

    # 5. Scanner post-processing: mild smoothing of the detected intensity (speckle reduction).
    k = imaging["smoothing"]
    shown = np.sqrt(gaussian_filter(env * env, (k * sz / grid.dz, k * sx / grid.dx), mode="nearest"))

    # 6. Log compression to the dynamic range, grey map (a power curve).
    dr = imaging["dynamic_range_db"]
    db = 20.0 * np.log10(shown + 1e-12) + imaging["gain_db"]
    white_db = 18.0
    grey = np.clip((db - (white_db - dr)) / dr, 0.0, 1.0) ** imaging["gamma"]
    return grey.astype(np.float32), env.astype(np.float32)
