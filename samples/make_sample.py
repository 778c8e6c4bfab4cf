"""Make samples/noisy-chart.png: a synthetic colour chart with Gaussian noise (sigma 25, seed 23).

The sample is drawn here rather than cut from a test set, so the repository carries no
third-party image. Run from the repository root: python samples/make_sample.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# The 24 patches of a colour checker (approximate sRGB values).
PATCHES = [
    (115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177), (103, 189, 170),
    (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108), (157, 188, 64), (224, 163, 46),
    (56, 61, 150), (70, 148, 73), (175, 54, 60), (231, 199, 31), (187, 86, 149), (8, 133, 161),
    (243, 243, 242), (200, 200, 200), (160, 160, 160), (122, 122, 121), (85, 85, 85), (52, 52, 52),
]


def chart(height: int = 320, width: int = 480) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([0.25 + 0.5 * x / width, 0.3 + 0.4 * y / height, 0.7 - 0.4 * x / width], axis=2)
    img = Image.fromarray((base * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for i, colour in enumerate(PATCHES):
        r, c = divmod(i, 6)
        x0, y0 = 16 + c * 48, 16 + r * 48
        draw.rectangle([x0, y0, x0 + 40, y0 + 40], fill=colour)
    for k in range(12):  # line pairs of falling pitch
        x0 = 320 + k * (12 - k // 2)
        draw.line([x0, 16, x0, 200], fill=(20, 20, 20), width=1 + (k < 4))
    for radius in range(8, 90, 8):
        draw.ellipse([150 - radius, 250 - radius // 3, 150 + radius, 250 + radius // 3], outline=(250, 240, 220))
    draw.text((300, 230), "n2ncli", fill=(255, 255, 255))
    draw.text((300, 260), "Neighbor2Neighbor", fill=(10, 10, 40))
    return np.asarray(img).astype(np.float32) / 255.0


def main() -> None:
    clean = chart()
    rng = np.random.default_rng(23)
    noisy = np.clip(clean + rng.normal(0.0, 25 / 255, clean.shape), 0, 1)
    out = Path(__file__).resolve().parent / "noisy-chart.png"
    Image.fromarray(np.floor(noisy * 255 + 0.5).astype(np.uint8)).save(out)
    Image.fromarray(np.floor(clean * 255 + 0.5).astype(np.uint8)).save(out.with_name("clean-chart.png"))


if __name__ == "__main__":
    main()
