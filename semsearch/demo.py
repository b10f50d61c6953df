"""Real photos for a first run, gathered from installed packages (the repository ships no photo sets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semsearch.paths import cache_dir

# skimage.data photos that ship inside the scikit-image wheel (no download), saved in several formats
# so that a first run also exercises the decoders.
_SKIMAGE_PHOTOS = {
    "chelsea": "jpg",
    "coffee": "jpg",
    "astronaut": "png",
    "rocket": "jpg",
    "hubble_deep_field": "jpg",
    "immunohistochemistry": "png",
    "retina": "jpg",
    "camera": "png",
    "coins": "png",
    "moon": "png",
    "grass": "webp",
    "gravel": "webp",
    "brick": "bmp",
    "colorwheel": "png",
    "horse": "png",
}


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two photos in one frame: the scene that shows what a focus class does."""
    height = min(left.shape[0], right.shape[0])
    return np.hstack([left[:height, : left.shape[1]], right[:height, : right.shape[1]]])


def demo_photos(target: Path | None = None) -> Path:
    """Write the sample photos once into `target` (default: the cache) and return that folder."""
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    folder = target or cache_dir() / "demo" / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    photos: dict[str, tuple[np.ndarray, str]] = {
        name: (getattr(data, name)(), fmt) for name, fmt in _SKIMAGE_PHOTOS.items()
    }
    photos["motorcycle"] = (data.stereo_motorcycle()[0], "jpg")
    samples = load_sample_images()
    for filename, pixels in zip(samples.filenames, samples.images, strict=True):
        photos[Path(filename).stem] = (pixels, "jpg")
    photos["cat-and-coffee"] = (_side_by_side(photos["chelsea"][0], photos["coffee"][0]), "jpg")
    for name, (pixels, fmt) in photos.items():
        path = folder / f"{name}.{fmt}"
        if path.exists():
            continue
        if pixels.dtype == bool:
            pixels = pixels.astype(np.uint8) * 255
        image = Image.fromarray(pixels)
        image = image.convert("RGB") if image.mode not in ("RGB", "L") else image
        hidden = path.with_name(f".{path.name}")  # scans skip dot-files; rename makes the photo appear whole
        image.save(hidden, format=Image.registered_extensions()[path.suffix])
        hidden.replace(path)
    return folder
