"""The HTML report: parsed with the stdlib, every table row and image file accounted for."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from n2ncli.evaluate import evaluate
from n2ncli.noise import parse_noise
from n2ncli.report import CropCollector, write_report


class Page(HTMLParser):
    """Collects tables (id -> rows of cell texts), img srcs and any external references."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.external: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or f"t{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a["src"] or "")
        if tag in ("script", "link") or any((v or "").startswith(("http:", "https:", "//")) for v in a.values()):
            self.external.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


class Half:
    """A 'denoiser' halfway between its input and mid-grey, so every method scores differently."""

    channels = 3

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return (batch + 0.5) / 2


class Same:
    channels = 3

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch.copy()


@pytest.fixture
def page(tmp_path: Path, kodak_crop: Callable[..., np.ndarray]) -> tuple[Path, Page]:
    images = [("a<b>.png", kodak_crop(0, 0, 40, 56)), ("c.png", kodak_crop(100, 100, 40, 56))]
    crops = CropCollector(max_images=1, size=32)
    results = [evaluate(Half(), images, parse_noise(n), dataset="kodak", repeats=2, baselines={"bm3d": Same()},
                        on_output=crops.hook("kodak", parse_noise(n).name)) for n in ("gaussian25", "poisson30")]

    index = write_report(tmp_path / "rep", results, model="m&m", seed=101, crops=crops, notes=["a note"])

    parser = Page()
    parser.feed(index.read_text(encoding="utf-8"))
    return index, parser


def test_summary_table_has_a_row_per_run_with_paper_figures(page: tuple[Path, Page]) -> None:
    _, parsed = page
    head, *rows = parsed.tables["summary"]

    assert head[:5] == ["dataset", "noise", "images x repeats", "noisy input PSNR / SSIM", "ours PSNR / SSIM"]
    assert head[5:] == ["BM3D PSNR / SSIM", "paper (Table 1) PSNR / SSIM"]
    assert [r[:3] for r in rows] == [["kodak", "gaussian25", "2 x 2"], ["kodak", "poisson30", "2 x 2"]]
    assert [r[-1] for r in rows] == ["32.08 / 0.879", "31.44 / 0.870"]


def test_per_image_tables_and_crops_exist(page: tuple[Path, Page]) -> None:
    index, parsed = page

    for i in (0, 1):
        head, *rows = parsed.tables[f"images-{i}"]
        assert head[-2:] == ["BM3D PSNR", "BM3D SSIM"]
        assert [(r[0], r[1]) for r in rows] == [("a<b>.png", "0"), ("a<b>.png", "1"), ("c.png", "0"), ("c.png", "1")]
    assert len(parsed.images) == 2 * 4  # one image per run x (noisy, ours, BM3D, clean)
    for src in parsed.images:
        assert "/" not in src and (index.parent / src).is_file()
    assert parsed.external == []  # opens offline: no scripts, stylesheets or remote files


def test_crops_are_the_centre_of_the_first_repeat(tmp_path: Path, kodak_crop: Callable[..., np.ndarray]) -> None:
    clean = kodak_crop(0, 0, 40, 56)
    crops = CropCollector(size=32)
    evaluate(Same(), [("a.png", clean)], parse_noise("gaussian25"), repeats=3, on_output=crops.hook("x", "g"))

    ((name, images),) = crops.crops[("x", "g")]
    assert name == "a.png" and list(images) == ["noisy", "model", "clean"]
    np.testing.assert_array_equal(images["clean"], clean[4:36, 12:44])
    np.testing.assert_array_equal(images["model"], images["noisy"])
