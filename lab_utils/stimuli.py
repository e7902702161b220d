"""Evidence from synthetic stimuli: the filter's response to oriented sinusoidal gratings
and to plain colour fields (the tuning curves of the circuits literature).

Every stimulus goes through the network in one batched scan (``probe.scan_images``:
compiled once, cached on disk by the stimuli's pixels), which answers for every filter
of the layer at once. A filter's response to a stimulus is the objective value
``featurevis.channel_activation(layer, f)``: its mean activation (after ReLU, averaged over
positions), as everywhere in the kit; for a grating it is the largest over ``N_PHASES``
phases (a shifted grating is the same stimulus to a position-pooled response, up to the
border). After the ReLU, not before it like the ascent's ``channel(layer, f)``: a tuning
curve is what the next layer receives (a filter that is off reads 0, however negative its
input sum), the quantity of the circuits literature's curves and of the kit's rankings,
and these numbers are the ones stored in the notebooks.

Orientation: degrees, 0 = vertical stripes (the luminance varies along x), counter-
clockwise; period: pixels per cycle at the network's input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ORIENTATIONS_DEG = tuple(range(0, 180, 15))  # 12 orientations; 180 is 0 again
PERIODS_PX = (4, 6, 8, 12, 16, 24, 32)
N_PHASES = 4
STIMULUS_PX = 112  # side of every stimulus: periodic patterns need no 224 px, and cost a quarter
CONTRAST = 1.0
COLOURS = {"black": (0, 0, 0), "grey": (128, 128, 128), "white": (255, 255, 255), "red": (220, 30, 30),
           "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (235, 215, 40), "cyan": (40, 200, 220),
           "magenta": (210, 40, 190), "orange": (240, 140, 30), "brown": (120, 75, 35)}


def grating(size: int, orientation_deg: float, period_px: float, phase: float, contrast: float = CONTRAST) -> np.ndarray:
    """A grey sinusoidal grating, uint8 (size, size, 3), mean 127.5."""
    theta = np.deg2rad(orientation_deg)
    # rounded so that 90 deg is exactly horizontal stripes (cos 90 deg is 6e-17, not 0)
    along_x, along_y = round(float(np.cos(theta)), 12), round(float(np.sin(theta)), 12)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    wave = np.sin(2 * np.pi * (x * along_x + y * along_y) / period_px + phase)
    lum = 127.5 + 127.5 * contrast * wave
    return np.repeat(np.rint(lum).clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


def stimulus_set(size: int = STIMULUS_PX):
    """(images uint8 (n, size, size, 3), descriptions): every grating (orientation x period x
    phase, in that nesting order), then every colour field (``COLOURS`` order)."""
    images, described = [], []
    for o in ORIENTATIONS_DEG:
        for p in PERIODS_PX:
            for k in range(N_PHASES):
                images.append(grating(size, o, p, 2 * np.pi * k / N_PHASES))
                described.append(("grating", o, p, k))
    for name, rgb in COLOURS.items():
        images.append(np.broadcast_to(np.array(rgb, np.uint8), (size, size, 3)).copy())
        described.append(("colour", name, None, None))
    return np.stack(images), described


@dataclass(frozen=True)
class Tuning:
    """One filter's responses. ``gratings``: float (n_orientations, n_periods), the largest
    response over phases; ``colours``: colour name -> response; ``preferred_*``: the
    orientation (degrees) and period (pixels per cycle) of the strongest grating."""

    layer_name: str
    filter_index: int
    orientations: tuple
    periods: tuple
    gratings: np.ndarray
    colours: dict

    @property
    def objective(self):
        """What the responses are: ``featurevis.channel_activation(layer_name, filter_index)``."""
        from .featurevis import channel_activation

        return channel_activation(self.layer_name, self.filter_index)

    @property
    def preferred(self) -> tuple[int, int]:
        i, j = np.unravel_index(int(np.argmax(self.gratings)), self.gratings.shape)
        return self.orientations[i], self.periods[j]

    def orientation_selectivity(self) -> float:
        """1 - (weakest / strongest) response over orientations at the preferred period:
        0 = the same to every orientation, 1 = silent to some orientation."""
        j = self.periods.index(self.preferred[1])
        column = self.gratings[:, j]
        return float(1 - column.min() / column.max()) if column.max() > 0 else 0.0

    def text(self) -> str:
        o, p = self.preferred
        best_colour = max(self.colours, key=self.colours.get)
        strongest = float(self.gratings.max())
        return (f"{self.layer_name} filter {self.filter_index}: strongest grating response {strongest:.1f} at "
                f"orientation {o} deg (0 = vertical stripes) and period {p} px per cycle; orientation selectivity "
                f"{self.orientation_selectivity():.2f} (0 = none, 1 = silent to some orientation); strongest colour "
                f"field: {best_colour} ({self.colours[best_colour]:.1f}), grey: {self.colours['grey']:.1f}.")


def tuning(model, layer_name: str, filter_index: int, size: int = STIMULUS_PX) -> Tuning:
    """The filter's tuning to gratings and colour fields (one cached pass for the layer).

    Responses are the objective ``featurevis.channel_activation(layer_name, filter_index)``
    (mean after ReLU), read from the layer's scan of the stimuli: the scan holds every filter
    of the layer, so the other filters' curves cost no pass."""
    from .featurevis import channel_activation
    from .models import check_filter
    from .probe import scan_images

    f = check_filter(model, layer_name, filter_index)
    images, described = stimulus_set(size)
    scan = scan_images(model, layer_name, images)
    response = channel_activation(layer_name, f).from_scan(scan).astype(np.float64)
    n_g = len(ORIENTATIONS_DEG) * len(PERIODS_PX) * N_PHASES
    gratings = response[:n_g].reshape(len(ORIENTATIONS_DEG), len(PERIODS_PX), N_PHASES).max(axis=2)
    colours = {d[1]: float(r) for d, r in zip(described[n_g:], response[n_g:])}
    return Tuning(layer_name, f, ORIENTATIONS_DEG, PERIODS_PX, gratings, colours)
