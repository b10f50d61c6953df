"""Real photos that ship inside installed packages, as model input: to check exports and calibrate int8.

Never the evaluation set (caltech-dev), and the calibration photos are disjoint from the check photos,
so a check is honest.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from semsearch.media import Geometry, load_image

CHECK_NAMES = (
    "chelsea.png",
    "coffee.png",
    "astronaut.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "horse.png",
    "camera.png",
)
#: Demo photos (semsearch.demo) made from the check photos, never used for calibration.
_CHECK_STEMS = {
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "motorcycle",
    "hubble_deep_field",
    "horse",
    "camera",
    "cat-and-coffee",
}


#: Real sentences to check text towers' exports on (and to time them with).
CHECK_SENTENCES = (
    "a photo of a cat",
    "a dog running on the grass",
    "two people riding bicycles down a city street at night",
    "coffee",
    "a red car parked next to a white building",
    "an astronaut floating above the earth",
    "the moon over the sea",
    "a plate of food on a wooden table",
)


def check_photos(size: int, geometry: Geometry = "squash") -> np.ndarray:
    """Photos shipped with scikit-image, (n, size, size, 3) uint8: what exports are checked on."""
    from skimage import data

    folder = Path(data.__file__).parent
    return np.stack([load_image(folder / n, size, geometry) for n in CHECK_NAMES if (folder / n).exists()])


def calibration_photos(size: int) -> np.ndarray:
    """Photos to calibrate int8 activation ranges: the demo photos minus the check photos, each squashed
    and cropped, and mirrored."""
    from semsearch.demo import demo_photos

    with tempfile.TemporaryDirectory() as tmp:
        folder = demo_photos(Path(tmp))
        pixels = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.stem in _CHECK_STEMS:
                continue
            for geometry in ("crop", "squash"):
                one = load_image(path, size, geometry=geometry)
                pixels += [one, one[:, ::-1]]
    return np.stack(pixels)
