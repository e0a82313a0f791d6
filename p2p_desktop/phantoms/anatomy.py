"""Breast anatomy and lesions for the phantom generator, as acoustic property maps.

Every structure is described in millimetres, and every random draw that shapes the anatomy
is independent of the pixel grid, so one seed gives the same breast at 128 or 256 pixels.

The maps (:class:`TissueMaps`) hold, per pixel:

* ``echo``      mean backscattered power of the diffuse scatterers (gland = 1.0),
* ``density``   fraction of resolution cells holding a scatterer (< 1: sparse, spotty speckle),
* ``specular``  amplitude of coherent reflectors (skin line, Cooper's ligaments, fascia, walls),
* ``alpha``     attenuation in dB/cm/MHz (drives shadowing and enhancement below a mass),
* ``mask``      the lesion (mass) region.

Layers from the skin down: skin line, dermis, subcutaneous fat lobules with Cooper's
ligaments rising from the crests of the fibroglandular layer, fibroglandular tissue (with fat
islands and ducts), retromammary fat, pectoral fascia and striated pectoral muscle, and, when
the field of view reaches it, the chest wall (pleura and ribs with their shadows).

Lesions follow the BI-RADS ultrasound lexicon (5th edition): shape (oval, round, irregular),
orientation (parallel, not parallel), margin (circumscribed; indistinct, angular,
microlobulated, spiculated), echo pattern (anechoic, hypoechoic, isoechoic, heterogeneous,
complex cystic and solid), posterior features (enhancement, shadowing, combined, none), plus
echogenic halo and calcifications.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Grid", "TissueMaps", "sample_tissue", "build_tissue", "sample_lesion", "add_lesion",
           "tissue_descriptors", "lesion_descriptors", "DESCRIPTOR_VALUES", "set_descriptor"]

# Attenuation, dB/cm/MHz (soft-tissue literature values, rounded).
ALPHA_FAT = 0.55
ALPHA_GLAND = 0.80
ALPHA_SKIN = 0.80
ALPHA_MUSCLE = 1.00
ALPHA_BONE = 20.0
ALPHA_LUNG = 8.0
# Coherent reflector amplitudes are given for this pixel area; see Grid.specular_scale.
_REF_PIXEL_AREA_MM2 = 0.09


@dataclass(frozen=True)
class Grid:
    """The image grid: ``rows`` × ``cols`` pixels covering ``depth_mm`` × ``width_mm``."""

    rows: int
    cols: int
    depth_mm: float
    width_mm: float

    @property
    def dz(self) -> float:
        return self.depth_mm / self.rows

    @property
    def dx(self) -> float:
        return self.width_mm / self.cols

    @property
    def z(self) -> np.ndarray:
        """Depth of each row centre, mm, shape (rows, 1)."""
        return ((np.arange(self.rows) + 0.5) * self.dz).astype(np.float32)[:, None]

    @property
    def x(self) -> np.ndarray:
        """Lateral position of each column centre, mm (0 = probe centre), shape (1, cols)."""
        return ((np.arange(self.cols) + 0.5) * self.dx - self.width_mm / 2).astype(np.float32)[None, :]

    @property
    def specular_scale(self) -> float:
        """Keeps a coherent reflector equally bright at every pixel size."""
        return math.sqrt(self.dz * self.dx / _REF_PIXEL_AREA_MM2)

    def window(self, z0: float, z1: float, x0: float, x1: float):
        """Row/column slices covering [z0, z1] × [x0, x1] mm and their local coordinates."""
        r0 = max(0, int(math.floor(z0 / self.dz)))
        r1 = min(self.rows, int(math.ceil(z1 / self.dz)) + 1)
        c0 = max(0, int(math.floor((x0 + self.width_mm / 2) / self.dx)))
        c1 = min(self.cols, int(math.ceil((x1 + self.width_mm / 2) / self.dx)) + 1)
        if r1 <= r0 or c1 <= c0:
            return None
        z = ((np.arange(r0, r1) + 0.5) * self.dz).astype(np.float32)[:, None]
        x = ((np.arange(c0, c1) + 0.5) * self.dx - self.width_mm / 2).astype(np.float32)[None, :]
        return (slice(r0, r1), slice(c0, c1)), z, x


@dataclass
class TissueMaps:
    """Acoustic property maps of one phantom (see the module docstring)."""

    echo: np.ndarray
    density: np.ndarray
    specular: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray

    @classmethod
    def empty(cls, grid: Grid) -> TissueMaps:
        shape = (grid.rows, grid.cols)
        f32 = np.float32
        return cls(np.zeros(shape, f32), np.ones(shape, f32), np.zeros(shape, f32),
                   np.full(shape, ALPHA_GLAND, f32), np.zeros(shape, dtype=bool))


# --------------------------------------------------------------------------- random helpers

def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _pick(rng: np.random.Generator, options: dict[str, float]) -> str:
    names = list(options)
    p = np.asarray([options[n] for n in names], dtype=float)
    return str(names[int(rng.choice(len(names), p=p / p.sum()))])


def _interp_weights(pos_mm: np.ndarray, spacing_mm: float, n_nodes: int) -> np.ndarray:
    """Gaussian interpolation weights from nodes (every ``spacing_mm``, starting 2 nodes
    before 0) to positions; rows normalised to unit energy so the result has unit variance."""
    nodes = (np.arange(n_nodes) - 2) * spacing_mm
    w = np.exp(-0.5 * ((pos_mm[:, None] - nodes[None, :]) / (0.55 * spacing_mm)) ** 2)
    return w / np.sqrt((w * w).sum(axis=1, keepdims=True))


class _Fields:
    """Smooth random fields and curves defined in millimetres (grid-independent draws)."""

    def __init__(self, grid: Grid, rng: np.random.Generator):
        self.g = grid
        self.rng = rng
        self._zpos = grid.z[:, 0]
        self._xpos = grid.x[0, :] + grid.width_mm / 2

    def field(self, corr_mm: float) -> np.ndarray:
        """A smooth zero-mean unit-variance field with correlation length ~``corr_mm``."""
        nz = int(math.ceil(self.g.depth_mm / corr_mm)) + 5
        nx = int(math.ceil(self.g.width_mm / corr_mm)) + 5
        nodes = self.rng.standard_normal((nz, nx))
        wz = _interp_weights(self._zpos, corr_mm, nz)
        wx = _interp_weights(self._xpos, corr_mm, nx)
        return (wz @ nodes @ wx.T).astype(np.float32)

    def curve(self, corr_mm: float, amp_mm: float) -> np.ndarray:
        """A smooth lateral profile (1, cols), zero mean, standard deviation ``amp_mm``."""
        nx = int(math.ceil(self.g.width_mm / corr_mm)) + 5
        nodes = self.rng.standard_normal(nx)
        wx = _interp_weights(self._xpos, corr_mm, nx)
        return (amp_mm * (wx @ nodes)).astype(np.float32)[None, :]


def _step(d: np.ndarray, width: float) -> np.ndarray:
    """Soft step from 0 (d < 0) to 1 (d > 0) over ``width`` mm."""
    return np.clip(d * np.float32(0.5 / max(width, 1e-6)) + np.float32(0.5), 0.0, 1.0)


def _rows_between(grid: Grid, lo: float, hi: float) -> slice:
    """Rows whose centres may lie within [lo, hi] mm of depth."""
    r0 = min(grid.rows, max(0, int(math.floor(lo / grid.dz)) - 1))
    r1 = min(grid.rows, int(math.ceil(min(hi, 1e6) / grid.dz)) + 1)
    return slice(r0, max(r0, r1))


def _depth_step(grid: Grid, top: np.ndarray, width: float) -> tuple[np.ndarray, int]:
    """Soft step below the curve z = top(x): (values for rows r0.., r0); rows above r0 are 0."""
    band = _rows_between(grid, float(top.min()) - width, float(top.max()) + width)
    out = np.ones((grid.rows - band.start, grid.cols), np.float32)
    rows = slice(0, band.stop - band.start)
    out[rows] = _step(grid.z[band] - top, width)
    return out, band.start


def _line_profile(d_mm: np.ndarray, grid: Grid, width_mm: float) -> np.ndarray:
    """Cross-section of a thin reflector at distance ``d_mm``; never thinner than the grid
    samples, with its integral kept when widened."""
    w = max(width_mm, 0.6 * max(grid.dz, grid.dx))
    return np.float32(width_mm / w) * np.exp(np.float32(-0.5 / w ** 2) * (d_mm * d_mm))


def _curve_reflector(maps: TissueMaps, grid: Grid, depth: np.ndarray, amp, width_mm: float,
                     sharp: float = 2.0, patchy: np.ndarray | None = None) -> None:
    """A reflector along the curve z = depth(x): bright where it faces the probe, its
    strength varying along it by the factor ``patchy`` (1, cols)."""
    if patchy is not None:
        amp = amp * np.clip(1.0 + patchy, 0.15, 2.0)
    slope = np.gradient(depth[0], grid.dx)[None, :]
    facing = (1.0 / np.sqrt(1.0 + slope ** 2)) ** sharp  # cos of incidence angle
    reach = 4.0 * max(width_mm, 0.6 * max(grid.dz, grid.dx))
    rows = _rows_between(grid, float(depth.min()) - reach, float(depth.max()) + reach)
    if rows.stop > rows.start:
        maps.specular[rows] += amp * facing * _line_profile(grid.z[rows] - depth, grid, width_mm)


# --------------------------------------------------------------------------- tissue

def sample_tissue(rng: np.random.Generator) -> dict:
    """Draw the tissue parameters (mm, relative echogenicity) of one breast."""
    composition = _pick(rng, {"fat": 0.25, "fibroglandular": 0.4, "heterogeneous": 0.35})
    depth = _u(rng, 32.0, 45.0)
    p = {
        "composition": composition,
        "depth_mm": depth,
        "skin_mm": _u(rng, 0.25, 0.7),
        "dermis_mm": _u(rng, 1.3, 2.4),
        "fat_mm": _u(rng, 5.0, 13.0) if composition == "fat" else _u(rng, 2.5, 9.0),
        "gland_mm": _u(rng, 3.0, 8.0) if composition == "fat" else _u(rng, 8.0, 18.0),
        "retro_mm": _u(rng, 1.0, 3.5),
        "muscle_mm": _u(rng, 6.0, 14.0),
        "echo_dermis": _u(rng, 0.3, 0.7),
        "echo_fat": _u(rng, 0.035, 0.08),
        "density_fat": _u(rng, 0.25, 0.6),
        "echo_gland": _u(rng, 0.8, 1.2),
        "gland_texture": _u(rng, 0.15, 0.3) if composition != "heterogeneous" else _u(rng, 0.45, 0.7),
        "echo_muscle": _u(rng, 0.06, 0.14),
        "crest_spacing_mm": _u(rng, 6.0, 13.0),
        "crest_height_mm": _u(rng, 0.8, 3.5),
        "ligament_amp": _u(rng, 0.8, 2.0),
        "fascia_amp": _u(rng, 1.0, 2.2),
        "striation_spacing_mm": _u(rng, 0.9, 1.8),
        "striation_angle_deg": _u(rng, -14.0, 14.0),
        "n_fat_islands": int(rng.integers(0, 3) if composition == "fibroglandular"
                             else rng.integers(3, 9) if composition == "heterogeneous"
                             else rng.integers(0, 3)),
        "n_ducts": int(rng.integers(0, 3)),
        "rib": bool(rng.random() < 0.5),
    }
    # Keep the pectoral muscle inside the field of view.
    budget = depth - 5.0
    stack = p["skin_mm"] + p["dermis_mm"] + p["fat_mm"] + p["gland_mm"] + p["retro_mm"]
    if stack > budget - 3.0:
        shrink = (budget - 3.0 - p["skin_mm"] - p["dermis_mm"] - p["retro_mm"]) / (p["fat_mm"] + p["gland_mm"])
        p["fat_mm"] *= shrink
        p["gland_mm"] *= shrink
    return p


def tissue_descriptors(p: dict) -> tuple[str, ...]:
    """BI-RADS background echotexture words for the tissue."""
    return {
        "fat": ("homogeneous background echotexture", "fat"),
        "fibroglandular": ("homogeneous background echotexture", "fibroglandular"),
        "heterogeneous": ("heterogeneous background echotexture",),
    }[p["composition"]]


def build_tissue(grid: Grid, p: dict, rng: np.random.Generator) -> tuple[TissueMaps, dict]:
    """Render the tissue layers; returns the maps and the layer boundaries (curves, mm)."""
    f = _Fields(grid, rng)
    m = TissueMaps.empty(grid)
    z, x = grid.z, grid.x
    sp = grid.specular_scale

    # 1. Layer boundaries: depth curves over x (1, cols), from the skin down.
    skin = p["skin_mm"] + f.curve(20.0, 0.08)
    dermis_bot = skin + p["dermis_mm"] + f.curve(8.0, 0.2)
    gland_base = dermis_bot + p["fat_mm"] + f.curve(22.0, 0.2 * p["fat_mm"])
    # crests of Duret: the gland surface rises towards the skin where ligaments attach
    spacing = p["crest_spacing_mm"]
    first = -grid.width_mm / 2 - _u(rng, 0.0, spacing)
    crests_x = np.arange(first, grid.width_mm / 2 + spacing, spacing)
    n_crests = len(crests_x)
    crests_x = crests_x + rng.uniform(-0.3, 0.3, n_crests) * spacing
    crest_h = p["crest_height_mm"] * rng.uniform(0.4, 1.2, n_crests)
    crest_w = spacing * rng.uniform(0.18, 0.3, n_crests)
    rise = (crest_h[:, None] * np.exp(-0.5 * ((x - crests_x[:, None]) / crest_w[:, None]) ** 2)).max(axis=0)[None, :]
    gland_top = np.maximum(gland_base - rise, dermis_bot + 0.8)
    gland_bot = np.maximum(gland_base + p["gland_mm"] + f.curve(20.0, 0.08 * p["gland_mm"]), gland_top + 1.5)
    muscle_top = gland_bot + p["retro_mm"] + f.curve(18.0, 0.3)
    muscle_top = np.maximum(np.minimum(muscle_top, grid.depth_mm - 4.0), gland_bot + 0.5)
    muscle_bot = muscle_top + p["muscle_mm"] + f.curve(16.0, 0.8)

    # 2. Diffuse scattering, layer by layer (soft transitions).
    tex = f.field(2.5)
    fat_lobule = f.field(3.0)
    echo_fat = p["echo_fat"] * np.exp(0.35 * fat_lobule)
    echo_gland = p["echo_gland"] * np.exp(p["gland_texture"] * tex - 0.5 * p["gland_texture"] ** 2)
    layers = [  # (top boundary, echo, density, alpha)
        (skin, p["echo_dermis"], 0.9, ALPHA_SKIN),
        (dermis_bot, echo_fat, p["density_fat"], ALPHA_FAT),
        (gland_top, echo_gland, 1.0, ALPHA_GLAND),
        (gland_bot, echo_fat * 1.2, p["density_fat"], ALPHA_FAT),
        (muscle_top, p["echo_muscle"] * np.exp(0.25 * tex), 0.8, ALPHA_MUSCLE),
    ]
    m.alpha[:] = ALPHA_SKIN
    for top, echo, dens, alpha in layers:
        s, r0 = _depth_step(grid, top, 0.25)
        for arr, val in ((m.echo, echo), (m.density, dens), (m.alpha, alpha)):
            val = val[r0:] if isinstance(val, np.ndarray) and val.shape[0] == grid.rows else val
            arr[r0:] += (val - arr[r0:]) * s

    # 3. Fat islands and ducts inside the fibroglandular layer.
    for _ in range(p["n_fat_islands"]):
        xc = _u(rng, -0.5, 0.5) * grid.width_mm
        frac = _u(rng, 0.25, 0.75)
        a, b = _u(rng, 2.0, 6.0), _u(rng, 0.8, 2.2)
        zc = float(np.interp(xc, x[0], (gland_top + frac * (gland_bot - gland_top))[0]))
        _ellipse_region(m, grid, zc, xc, a, b, _u(rng, -0.3, 0.3), echo=p["echo_fat"] * 1.3,
                        density=p["density_fat"], edge_mm=0.4, rim_amp=0.6 * sp * rng.random(), rim_cover=0.5,
                        start=_u(rng, 0, 2 * math.pi))
    for _ in range(p["n_ducts"]):
        frac = _u(rng, 0.3, 0.7)
        depth = gland_top + frac * (gland_bot - gland_top) + f.curve(10.0, 0.6)
        x0 = _u(rng, -0.5, 0.3) * grid.width_mm
        length = _u(rng, 8.0, 22.0)
        radius = _u(rng, 0.4, 1.0)
        along = _step(x - x0, 1.0) * _step(x0 + length - x, 1.0)
        inside = _step(radius - np.abs(z - depth), 0.15) * along
        m.echo = m.echo * (1 - 0.9 * inside)
        _curve_reflector(m, grid, depth - radius, 1.2 * along * sp, 0.12)
        _curve_reflector(m, grid, depth + radius, 1.2 * along * sp, 0.12)

    # 4. Skin line, dermis-fat interface, Cooper's ligaments and fat-lobule septa.
    _curve_reflector(m, grid, skin, _u(rng, 1.5, 3.0) * sp, 0.12, patchy=f.curve(8.0, 0.15))
    _curve_reflector(m, grid, dermis_bot, _u(rng, 0.5, 1.2) * sp, 0.15, patchy=f.curve(4.0, 0.6))
    _curve_reflector(m, grid, gland_top, _u(rng, 0.6, 1.4) * sp, 0.15, sharp=3.0, patchy=f.curve(4.0, 0.6))
    # (all draws come before any grid-dependent test, so every grid sees the same stream)
    lig = rng.uniform(0.0, 1.0, (n_crests, 4))
    for i in range(n_crests):
        z_top = float(np.interp(crests_x[i], x[0], dermis_bot[0]))
        z_bot = float(np.interp(crests_x[i], x[0], gland_top[0]))
        if z_bot - z_top < 0.8:
            continue
        drift = (0.3 + 0.7 * lig[i, 0]) * spacing * (1 if lig[i, 1] < 0.5 else -1)
        bend = (lig[i, 2] - 0.5) * 0.5 * spacing
        _ligament(m, grid, z_top, z_bot, crests_x[i], drift, bend,
                  p["ligament_amp"] * (0.5 + 0.7 * lig[i, 3]) * sp)
    # septa around fat lobules: arcs between neighbouring ligaments
    sep = rng.uniform(0.0, 1.0, (max(n_crests - 1, 0), 6))
    for i in range(n_crests - 1):
        xc = 0.5 * (crests_x[i] + crests_x[i + 1]) + (sep[i, 0] - 0.5) * 0.3 * spacing
        zt = float(np.interp(xc, x[0], dermis_bot[0]))
        zb = float(np.interp(xc, x[0], gland_top[0]))
        if zb - zt < 1.5:
            continue
        a = 0.5 * spacing * (0.55 + 0.35 * sep[i, 1])
        b = 0.5 * (zb - zt) * (0.6 + 0.35 * sep[i, 2])
        _ellipse_region(m, grid, 0.5 * (zt + zb), xc, a, b, (sep[i, 3] - 0.5) * 0.4,
                        echo=None, density=None, edge_mm=0.5,
                        rim_amp=p["ligament_amp"] * (0.15 + 0.3 * sep[i, 4]) * sp,
                        rim_cover=0.3 + 0.4 * sep[i, 5], start=sep[i, 5] * 7.0)

    # 5. Pectoral fascia (bright, faces the probe) and muscle striations.
    _curve_reflector(m, grid, muscle_top, p["fascia_amp"] * sp, 0.15, patchy=f.curve(5.0, 0.45))
    ang = math.radians(p["striation_angle_deg"])
    rel = (z - muscle_top) * math.cos(ang) + x * math.sin(ang)
    phase = 2 * math.pi * rel / p["striation_spacing_mm"] + 2.5 * f.field(5.0)
    broken = _step(f.field(1.5) - 0.2, 0.5)
    in_muscle = _step(z - muscle_top - 0.4, 0.2) * _step(muscle_bot - z, 0.3)
    striae = np.maximum(np.cos(phase), 0.0) ** 6
    m.specular += _u(rng, 0.15, 0.45) * sp * math.cos(ang) ** 2 * striae * broken * in_muscle

    # 6. Chest wall below the muscle, when in view: a rib (bright cortex, total shadow) or pleura.
    # (drawn whether or not the chest wall is in view; the test below uses parameters only)
    rib_x, rib_half, pleura_gap = _u(rng, -0.3, 0.3) * grid.width_mm, _u(rng, 5.0, 9.0), _u(rng, 1.5, 4.0)
    patchy_bot, patchy_pleura = f.curve(4.0, 0.8), f.curve(5.0, 0.5)
    stack = sum(p[k] for k in ("skin_mm", "dermis_mm", "fat_mm", "gland_mm", "retro_mm", "muscle_mm"))
    chest = {"chest_wall": "none"}
    if stack < grid.depth_mm - 2.0:
        _curve_reflector(m, grid, muscle_bot, 0.3 * p["fascia_amp"] * sp, 0.15, patchy=patchy_bot)
        below, r0 = _depth_step(grid, muscle_bot, 0.3)
        m.echo[r0:] += (p["echo_muscle"] * 0.8 - m.echo[r0:]) * below
        pleura = muscle_bot + pleura_gap
        chest = {"chest_wall": "pleura"}
        if p["rib"]:
            zc = float(np.interp(rib_x, x[0], pleura[0])) - 0.5
            top = zc + (((x - rib_x) / rib_half) ** 2) * 2.0
            inside = _step(rib_half - np.abs(x - rib_x), 0.4)
            _curve_reflector(m, grid, top, 2.5 * sp * inside, 0.15, sharp=1.0)
            bone, r0 = _depth_step(grid, top + 0.3, 0.2)
            m.alpha[r0:] += ALPHA_BONE * bone * inside
            chest = {"chest_wall": "rib", "rib_x_mm": rib_x, "rib_half_width_mm": rib_half}
        _curve_reflector(m, grid, pleura, 1.0 * sp, 0.15, patchy=patchy_pleura)
        lung, r0 = _depth_step(grid, pleura, 0.2)
        m.echo[r0:] += (0.05 - m.echo[r0:]) * lung
        m.alpha[r0:] += (ALPHA_LUNG - m.alpha[r0:]) * lung

    bounds = {"skin": skin, "dermis_bot": dermis_bot, "gland_top": gland_top, "gland_bot": gland_bot,
              "muscle_top": muscle_top, "muscle_bot": muscle_bot}
    info = {"layers_mm": {k: float(v.mean()) for k, v in bounds.items()}, **chest}
    return m, {"bounds": bounds, "info": info}


def _ligament(m: TissueMaps, grid: Grid, z_top: float, z_bot: float, x_bot: float, drift: float,
              bend: float, amp: float) -> None:
    """A Cooper's ligament: a thin curved echogenic band from a gland crest up to the dermis."""
    x_top = x_bot + drift
    lo, hi = min(x_top, x_bot) - abs(bend) - 1, max(x_top, x_bot) + abs(bend) + 1
    win = grid.window(z_top - 0.5, z_bot + 0.5, lo, hi)
    if win is None:
        return
    sl, z, x = win
    t = np.clip((z - z_top) / (z_bot - z_top), 0.0, 1.0)
    path = x_top + (x_bot - x_top) * t + bend * 4 * t * (1 - t)
    slope = ((x_bot - x_top) + bend * 4 * (1 - 2 * t)) / (z_bot - z_top)  # dx/dz
    cos_n = 1.0 / np.sqrt(1.0 + slope ** 2)  # distance scale across the line
    facing = np.abs(slope) * cos_n  # |cos| between the line normal and the beam
    along = _step(z - z_top + 0.2, 0.2) * _step(z_bot + 0.2 - z, 0.2)
    m.specular[sl] += amp * (0.35 + 0.65 * facing) * along * _line_profile((x - path) * cos_n, grid, 0.15)
    m.echo[sl] += 0.25 * along * _line_profile((x - path) * cos_n, grid, 0.35)


def _ellipse_region(m: TissueMaps, grid: Grid, zc: float, xc: float, a: float, b: float, tilt: float,
                    echo, density, edge_mm: float, rim_amp: float, rim_cover: float,
                    start: float) -> None:
    """An ellipse (semi-axes a lateral, b axial, mm) setting echo/density inside, with a partial
    specular rim (septum) covering ``rim_cover`` of its outline."""
    r = max(a, b) + 1.0
    win = grid.window(zc - r, zc + r, xc - r, xc + r)
    cover = rim_cover * 2 * math.pi
    if win is None:
        return
    sl, z, x = win
    u, v = x - xc, z - zc
    c, s = math.cos(tilt), math.sin(tilt)
    uu, vv = c * u + s * v, -s * u + c * v
    rho = np.sqrt((uu / a) ** 2 + (vv / b) ** 2) + 1e-9
    d = (1.0 - rho) * np.hypot(uu, vv) / rho  # radial distance to the outline, mm (+ inside)
    if echo is not None:
        w = _step(d, edge_mm)
        m.echo[sl] = m.echo[sl] * (1 - w) + echo * w
        m.density[sl] = m.density[sl] * (1 - w) + density * w
    if rim_amp > 0:
        theta = np.arctan2(vv / b, uu / a)
        on_arc = ((theta - start) % (2 * math.pi)) < cover
        nz = -s * (uu / a ** 2) + c * (vv / b ** 2)  # normal, beam (z) component
        nx = c * (uu / a ** 2) - s * (vv / b ** 2)
        facing = np.abs(nz) / (np.hypot(nz, nx) + 1e-12)
        m.specular[sl] += rim_amp * on_arc * (0.3 + 0.7 * facing ** 2) * _line_profile(d, grid, 0.12)


# --------------------------------------------------------------------------- lesions

def sample_lesion(rng: np.random.Generator, label: str) -> dict:
    """Draw a BI-RADS-informed mass for ``label`` ("benign" or "malignant")."""
    if label == "benign":
        kind = _pick(rng, {"cyst": 0.35, "fibroadenoma": 0.55, "complex cyst": 0.10})
        width = _u(rng, 6.0, 22.0)
        shape = "round" if rng.random() < 0.22 else "oval"
        if rng.random() < 0.07 and kind == "fibroadenoma":
            shape = "irregular"  # atypical benign
        ratio = _u(rng, 0.92, 1.08) if shape == "round" else _u(rng, 1.3, 2.3)  # width / height
        if rng.random() < 0.07 and shape != "round":
            ratio = 1.0 / _u(rng, 1.05, 1.3)  # atypical: not parallel
        margins = ["circumscribed"]
        if kind == "fibroadenoma" and rng.random() < 0.12:
            margins = [_pick(rng, {"indistinct": 0.6, "microlobulated": 0.4})]  # atypical
        if kind == "cyst":
            echo_pattern = "anechoic"
            posterior = _pick(rng, {"posterior enhancement": 0.85, "no posterior features": 0.15})
        elif kind == "complex cyst":
            echo_pattern = "complex cystic and solid"
            posterior = _pick(rng, {"posterior enhancement": 0.7, "no posterior features": 0.3})
        else:
            echo_pattern = _pick(rng, {"hypoechoic": 0.82, "isoechoic": 0.12, "heterogeneous": 0.06})
            posterior = _pick(rng, {"no posterior features": 0.55, "posterior enhancement": 0.35,
                                    "posterior shadowing": 0.10})
        halo = False
        calcs = kind == "fibroadenoma" and rng.random() < 0.06
    else:
        kind = "carcinoma"
        width = _u(rng, 6.0, 20.0)
        shape = _pick(rng, {"irregular": 0.85, "oval": 0.1, "round": 0.05})
        parallel = rng.random() < 0.22
        ratio = _u(rng, 1.0, 1.5) if parallel else 1.0 / _u(rng, 1.15, 1.9)
        if shape == "round":
            ratio = _u(rng, 0.92, 1.08)
        pool = {"spiculated": 0.3, "angular": 0.25, "microlobulated": 0.25, "indistinct": 0.2}
        first = _pick(rng, pool)
        margins = [first]
        if rng.random() < 0.45:
            pool.pop(first)
            margins.append(_pick(rng, pool))
        echo_pattern = _pick(rng, {"heterogeneous": 0.55, "hypoechoic": 0.37, "complex cystic and solid": 0.08})
        posterior = _pick(rng, {"posterior shadowing": 0.62, "no posterior features": 0.23,
                                "posterior enhancement": 0.1, "combined pattern": 0.05})
        halo = rng.random() < 0.55
        calcs = rng.random() < 0.35
    height = width / ratio
    if height > 18.0:  # keep the mass and the region below it in view
        height, width = 18.0, 18.0 * ratio
    orientation = "parallel" if ratio >= 1.0 else "not parallel"
    harmonics = []
    if shape == "irregular":
        harmonics = [(k, _u(rng, 0.08, 0.2) / k ** 0.5, _u(rng, 0, 2 * math.pi)) for k in range(2, 6)]
    else:
        harmonics = [(k, _u(rng, 0.0, 0.03), _u(rng, 0, 2 * math.pi)) for k in range(2, 5)]
    p = {
        "kind": kind, "shape": shape, "orientation": orientation, "margins": margins,
        "echo_pattern": echo_pattern, "posterior": posterior, "halo": halo, "calcifications": calcs,
        "width_mm": width, "height_mm": height,
        "tilt_deg": _u(rng, -12, 12) if orientation == "parallel" else _u(rng, -22, 22),
        "x_frac": _u(rng, -0.25, 0.25), "depth_frac": _u(rng, 0.15, 0.85),
        "harmonics": [[k, a, ph] for k, a, ph in harmonics],
        # interior echo relative to subcutaneous fat (the BI-RADS reference for echo pattern)
        "echo_rel_fat": {"anechoic": _u(rng, 0.02, 0.08), "hypoechoic": _u(rng, 0.2, 0.6),
                         "isoechoic": _u(rng, 0.85, 1.25), "heterogeneous": _u(rng, 0.2, 0.7),
                         "complex cystic and solid": _u(rng, 0.4, 0.8)}[echo_pattern],
        "posterior_db": _u(rng, 10.0, 24.0) if "shadow" in posterior or "combined" in posterior
        else _u(rng, 5.0, 12.0) if "enhancement" in posterior else 0.0,
        "halo_mm": _u(rng, 0.8, 2.0), "halo_gain": _u(rng, 1.8, 3.0),
        "wall_amp": _u(rng, 1.0, 2.5) if kind in ("cyst", "complex cyst") else _u(rng, 0.0, 0.8),
        "edge_shadow_db": _u(rng, 4.0, 10.0) if "circumscribed" in margins else 0.0,
    }
    # margin features drawn here so that the mass is fully determined by its parameters
    p["polygon"] = ([[_u(rng, 0, 2 * math.pi), _u(rng, 0.7, 1.2)] for _ in range(int(rng.integers(5, 9)))]
                    if "angular" in margins else [])
    p["lobules"] = ([int(rng.integers(9, 16)), _u(rng, 0.05, 0.1), _u(rng, 0, 2 * math.pi)]
                    if "microlobulated" in margins else [])
    p["spicules"] = ([[_u(rng, 0, 2 * math.pi), _u(rng, 2.5, 7.0), _u(rng, 1.0, 2.2)]
                      for _ in range(int(rng.integers(6, 14)))] if "spiculated" in margins else [])
    p["edge_mm"] = 0.9 if "indistinct" in margins else 0.12
    p["calc_spots"] = ([[_u(rng, -0.6, 0.6), _u(rng, -0.6, 0.6), _u(rng, 0.5, 1.4)]
                        for _ in range(int(rng.integers(3, 10)))] if calcs else [])
    p["nodule"] = ([_u(rng, 0, 2 * math.pi), _u(rng, 0.25, 0.45)] if kind == "complex cyst" else [])
    p["heterogeneity"] = 0.9 if echo_pattern == "heterogeneous" else 0.2
    return p


# --------------------------------------------------------------------------- descriptor edits

# The values each diagnostic descriptor can take in the generator (BI-RADS words, as drawn above).
DESCRIPTOR_VALUES = {
    "margin": ("circumscribed", "indistinct", "angular", "microlobulated", "spiculated"),
    "shape": ("oval", "round", "irregular"),
    "orientation": ("parallel", "not parallel"),
    "echo_pattern": ("anechoic", "hypoechoic", "isoechoic", "heterogeneous", "complex cystic and solid"),
    "posterior": ("posterior enhancement", "posterior shadowing", "combined pattern", "no posterior features"),
    "calcifications": (True, False),
    "halo": (True, False),
}


def set_descriptor(p: dict, descriptor: str, value, rng: np.random.Generator) -> dict:
    """The mass ``p`` (from :func:`sample_lesion`) with one BI-RADS descriptor set to ``value``,
    everything else about it kept (size, site, tilt, interior texture draws); the features the new
    value needs (spicules, outline harmonics, posterior strength, calcification spots ...) are drawn
    from ``rng`` over the same ranges :func:`sample_lesion` uses."""
    if descriptor not in DESCRIPTOR_VALUES:
        raise ValueError(f"unknown mass descriptor {descriptor!r}; expected one of {', '.join(DESCRIPTOR_VALUES)}")
    if value not in DESCRIPTOR_VALUES[descriptor]:
        raise ValueError(f"unknown {descriptor} {value!r}; expected one of {DESCRIPTOR_VALUES[descriptor]}")
    p = {k: (list(v) if isinstance(v, list) else v) for k, v in p.items()}
    if descriptor == "margin":
        p["margins"] = [value]
        p["polygon"] = ([[_u(rng, 0, 2 * math.pi), _u(rng, 0.7, 1.2)] for _ in range(int(rng.integers(5, 9)))]
                        if value == "angular" else [])
        p["lobules"] = ([int(rng.integers(9, 16)), _u(rng, 0.05, 0.1), _u(rng, 0, 2 * math.pi)]
                        if value == "microlobulated" else [])
        p["spicules"] = ([[_u(rng, 0, 2 * math.pi), _u(rng, 2.5, 7.0), _u(rng, 1.0, 2.2)]
                          for _ in range(int(rng.integers(6, 14)))] if value == "spiculated" else [])
        p["edge_mm"] = 0.9 if value == "indistinct" else 0.12
        p["edge_shadow_db"] = _u(rng, 4.0, 10.0) if value == "circumscribed" else 0.0
        if value == "circumscribed" and p["kind"] == "carcinoma":
            p["wall_amp"] = _u(rng, 0.0, 0.8)
    elif descriptor == "shape":
        area = p["width_mm"] * p["height_mm"]
        ratio = p["width_mm"] / p["height_mm"]
        if value == "round":
            ratio = _u(rng, 0.92, 1.08)
        elif p["shape"] == "round":  # round -> oval or irregular: elongate along its orientation
            ratio = _u(rng, 1.3, 2.3) if p["orientation"] == "parallel" else 1.0 / _u(rng, 1.15, 1.9)
        p["height_mm"] = min(math.sqrt(area / ratio), 18.0)
        p["width_mm"] = p["height_mm"] * ratio
        p["orientation"] = "parallel" if ratio >= 1.0 else "not parallel"
        p["harmonics"] = ([[k, _u(rng, 0.08, 0.2) / k ** 0.5, _u(rng, 0, 2 * math.pi)] for k in range(2, 6)]
                          if value == "irregular" else
                          [[k, _u(rng, 0.0, 0.03), _u(rng, 0, 2 * math.pi)] for k in range(2, 5)])
        p["shape"] = value
    elif descriptor == "orientation":
        if value != p["orientation"]:
            ratio = p["width_mm"] / p["height_mm"]
            if abs(math.log(ratio)) < math.log(1.15):  # too round to have an orientation: elongate it
                ratio = _u(rng, 1.15, 1.9) if value == "parallel" else 1.0 / _u(rng, 1.15, 1.9)
                if p["shape"] == "round":
                    p["shape"] = "oval"
            else:
                ratio = 1.0 / ratio
            area = p["width_mm"] * p["height_mm"]
            p["height_mm"] = min(math.sqrt(area / ratio), 18.0)
            p["width_mm"] = p["height_mm"] * ratio
            p["tilt_deg"] = _u(rng, -12, 12) if value == "parallel" else _u(rng, -22, 22)
        p["orientation"] = value
    elif descriptor == "echo_pattern":
        p["echo_pattern"] = value
        p["echo_rel_fat"] = {"anechoic": _u(rng, 0.02, 0.08), "hypoechoic": _u(rng, 0.2, 0.6),
                             "isoechoic": _u(rng, 0.85, 1.25), "heterogeneous": _u(rng, 0.2, 0.7),
                             "complex cystic and solid": _u(rng, 0.4, 0.8)}[value]
        p["heterogeneity"] = 0.9 if value == "heterogeneous" else 0.2
        p["nodule"] = ([_u(rng, 0, 2 * math.pi), _u(rng, 0.25, 0.45)]
                       if value == "complex cystic and solid" and p["kind"] != "carcinoma" else [])
    elif descriptor == "posterior":
        p["posterior"] = value
        p["posterior_db"] = (_u(rng, 10.0, 24.0) if "shadow" in value or "combined" in value
                             else _u(rng, 5.0, 12.0) if "enhancement" in value else 0.0)
    elif descriptor == "calcifications":
        p["calcifications"] = bool(value)
        p["calc_spots"] = ([[_u(rng, -0.6, 0.6), _u(rng, -0.6, 0.6), _u(rng, 0.5, 1.4)]
                            for _ in range(int(rng.integers(3, 10)))] if value else [])
    elif descriptor == "halo":
        p["halo"] = bool(value)
    return p


def lesion_descriptors(p: dict) -> tuple[str, ...]:
    """The BI-RADS words that describe the rendered mass."""
    words = [p["shape"], p["orientation"], *p["margins"], p["echo_pattern"], p["posterior"]]
    if p["halo"]:
        words.append("echogenic halo")
    if p["calcifications"]:
        words.append("calcifications")
    return tuple(words)


def _radius_table(p: dict, n: int = 720) -> tuple[np.ndarray, np.ndarray]:
    """Outline radius R(θ) on ``n`` angles (1 = the plain oval)."""
    th = np.linspace(-math.pi, math.pi, n, endpoint=False)
    r = np.ones(n)
    for k, a, ph in p["harmonics"]:
        r += a * np.cos(k * th + ph)
    if p["polygon"]:
        verts = sorted(p["polygon"])
        ang = np.array([v[0] for v in verts])
        rad = np.array([v[1] for v in verts])
        ang = np.concatenate([ang - 2 * math.pi, ang, ang + 2 * math.pi]) - math.pi
        rad = np.concatenate([rad, rad, rad])
        r *= np.interp(th, ang, rad)
    if p["lobules"]:
        k, a, ph = p["lobules"]
        r += a * (np.abs(np.cos(0.5 * k * th + ph)) - 0.64)
    return th, np.maximum(r, 0.35)


def add_lesion(m: TissueMaps, grid: Grid, p: dict, tissue: dict, bounds: dict, f0_mhz: float,
               rng: np.random.Generator) -> dict:
    """Render the mass ``p`` into the maps of ``tissue`` (its parameters and layer boundaries
    ``bounds``) imaged at ``f0_mhz``; sets ``m.mask``. Returns placement info (mm)."""
    a, b = p["width_mm"] / 2, p["height_mm"] / 2
    x = grid.x
    xc = p["x_frac"] * grid.width_mm
    gt = float(np.interp(xc, x[0], bounds["gland_top"][0]))
    gb = float(np.interp(xc, x[0], bounds["gland_bot"][0]))
    top_limit = float(np.interp(xc, x[0], bounds["dermis_bot"][0])) + 1.0 + b
    bottom_limit = grid.depth_mm - 7.0 - b
    zc = gt + p["depth_frac"] * max(gb - gt, 0.0)
    zc = float(min(max(zc, top_limit), max(bottom_limit, top_limit)))
    xc = float(np.clip(xc, -grid.width_mm / 2 + a * 0.8, grid.width_mm / 2 - a * 0.8))

    # Local frame: a square of side 2*extent mm around the centre; its random fields are drawn
    # on nodes fixed in mm, so the mass looks the same on every grid.
    extent = max(a, b) * 1.6 + 8.0
    local = _LocalFrame(rng, zc - extent, xc - extent, 2 * extent)
    het_nodes = local.nodes(1.6)
    necrosis_nodes = local.nodes(2.0)
    win = grid.window(zc - extent, zc + extent, xc - extent, xc + extent)
    sl, z, xx = win
    th_tab, r_tab = _radius_table(p)
    tilt = math.radians(p["tilt_deg"])
    c, s = math.cos(tilt), math.sin(tilt)
    u, v = xx - xc, z - zc
    uu, vv = c * u + s * v, -s * u + c * v
    rho = np.sqrt((uu / a) ** 2 + (vv / b) ** 2) + 1e-9
    theta = np.arctan2(vv / b, uu / a)
    idx = ((theta + math.pi) / (2 * math.pi) * len(th_tab)).astype(int) % len(th_tab)
    mm_per_rho = np.hypot(uu, vv) / rho
    d = (r_tab[idx] - rho) * mm_per_rho  # radial distance inside the outline, mm

    # spicules: thin tapering projections from the outline (directions in the mass frame)
    spic = np.zeros_like(d)
    flanks = np.zeros_like(d)  # echogenic (desmoplastic) tissue along each spicule
    for ang, length, width in p["spicules"]:
        dirx, dirz = math.cos(ang), math.sin(ang)
        j = int((math.atan2(dirz / b, dirx / a) + math.pi) / (2 * math.pi) * len(th_tab)) % len(th_tab)
        base = r_tab[j] / math.hypot(dirx / a, dirz / b)  # outline radius along it, mm
        along = uu * dirx + vv * dirz - base + 0.5
        across = np.abs(-uu * dirz + vv * dirx)
        taper = np.clip(1.0 - along / length, 0.0, 1.0)
        spic = np.maximum(spic, _step(0.5 * width * taper - across, 0.12) * (along > 0))
        flanks = np.maximum(flanks, _line_profile(across - 0.5 * width * taper - 0.35, grid, 0.3)
                            * (along > -0.5) * (taper > 0))
    inside = np.maximum(_step(d, p["edge_mm"]), spic)
    mask = (d > 0) | (spic > 0.5)

    # 1. Interior echoes (heterogeneous: log-normal texture; necrosis: anechoic patches).
    het_f = local.field(het_nodes, 1.6, z, xx)
    echo_ref = p["echo_rel_fat"] * tissue["echo_fat"]
    echo_in = echo_ref * np.exp(p["heterogeneity"] * het_f - 0.5 * p["heterogeneity"] ** 2)
    dens_in = 0.3 if p["echo_pattern"] == "anechoic" else 0.9
    if p["echo_pattern"] == "complex cystic and solid" and p["kind"] == "carcinoma":
        necrosis = _step(local.field(necrosis_nodes, 2.0, z, xx) - 0.3, 0.3)
        echo_in = echo_in * (1 - 0.97 * necrosis)
    if p["nodule"]:  # a mural solid nodule in a complex cyst
        ang, frac = p["nodule"]
        echo_in = echo_in * 0.03
        nz_, nx_ = zc + b * (1 - frac) * math.sin(ang), xc + a * (1 - frac) * math.cos(ang)
        nod = _step(frac * min(a, b) - np.hypot(z - nz_, xx - nx_), 0.3)
        echo_in = echo_in * (1 - nod) + tissue["echo_fat"] * 1.2 * nod
    if p["halo"]:
        ring = _step(d + p["halo_mm"], 0.6) * (1 - inside)
        m.echo[sl] = m.echo[sl] * (1 + (p["halo_gain"] - 1) * ring)
    if p["spicules"]:
        m.echo[sl] += (1.5 * tissue["echo_gland"]) * flanks * (1 - inside)
    m.echo[sl] = m.echo[sl] * (1 - inside) + echo_in * inside
    m.density[sl] = m.density[sl] * (1 - inside) + dens_in * inside
    m.specular[sl] = m.specular[sl] * (1 - inside)  # tissue planes end at the mass

    # 2. Wall: a specular outline, bright where it faces the probe (anterior/posterior walls).
    nzc = -s * (uu / a ** 2) + c * (vv / b ** 2)
    nxc = c * (uu / a ** 2) - s * (vv / b ** 2)
    facing = np.abs(nzc) / (np.hypot(nzc, nxc) + 1e-12)
    if p["wall_amp"] > 0 and p["edge_mm"] < 0.5:
        m.specular[sl] += p["wall_amp"] * grid.specular_scale * facing ** 2 * _line_profile(d, grid, 0.12)

    # 3. Calcifications: bright punctate reflectors inside.
    for fx, fz, amp in p["calc_spots"]:
        cz, cx = zc + fz * b, xc + fx * a
        spot = _line_profile(np.hypot(z - cz, xx - cx), grid, 0.15)
        m.specular[sl] += amp * grid.specular_scale * spot * (d > 0.3)

    # 4. Posterior features through attenuation: the columns below see the mass's path.
    height_cm = 2 * b / 10.0
    if p["posterior"] in ("posterior shadowing", "combined pattern"):
        d_alpha = p["posterior_db"] / (2 * f0_mhz * height_cm)
    elif p["posterior"] == "posterior enhancement":
        d_alpha = -p["posterior_db"] / (2 * f0_mhz * height_cm)
    else:
        d_alpha = 0.0
    alpha_in = np.maximum(m.alpha[sl] + d_alpha, 0.02)
    if p["posterior"] == "combined pattern":  # shadow on one side, enhancement on the other
        side = _step(uu, 1.0)
        alpha_in = alpha_in * side + np.maximum(m.alpha[sl] - d_alpha * 0.6, 0.02) * (1 - side)
    core = _step(d, 0.15)
    m.alpha[sl] = m.alpha[sl] * (1 - core) + alpha_in * core
    if p["edge_shadow_db"] > 0:  # refraction at the lateral walls of smooth masses
        shell = _line_profile(d, grid, 0.35) * (1 - facing) ** 4
        m.alpha[sl] += shell * p["edge_shadow_db"] / (2 * f0_mhz * 0.06 * max(b, 1.0))

    m.mask[sl] |= mask
    return {"center_mm": [zc, xc], "semi_axes_mm": [a, b]}


class _LocalFrame:
    """Smooth random fields on a square window given in mm (draws independent of the grid)."""

    def __init__(self, rng: np.random.Generator, z0: float, x0: float, side_mm: float):
        self.rng, self.z0, self.x0, self.side = rng, z0, x0, side_mm

    def nodes(self, corr_mm: float) -> np.ndarray:
        n = int(math.ceil(self.side / corr_mm)) + 5
        return self.rng.standard_normal((n, n))

    def field(self, nodes: np.ndarray, corr_mm: float, z: np.ndarray, x: np.ndarray) -> np.ndarray:
        wz = _interp_weights(z[:, 0] - self.z0, corr_mm, nodes.shape[0])
        wx = _interp_weights(x[0, :] - self.x0, corr_mm, nodes.shape[1])
        return wz @ nodes @ wx.T
