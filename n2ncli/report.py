"""``n2n eval --report DIR``: one self-contained HTML page (no scripts, no external CSS or fonts,
opens offline) with the summary table, per-image scores and side-by-side crops as PNG files.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from n2ncli.evaluate import EvalResult
from n2ncli.fsutil import atomic_write_text
from n2ncli.metrics import quantize_uint8

#: column titles of the methods, in table order
LABELS = {"noisy": "noisy input", "model": "ours", "self-ensemble": "ours, self-ensemble x8", "bm3d": "BM3D",
          "clean": "clean"}


@dataclass
class CropCollector:
    """Keeps a crop of the first repeat of the first ``max_images`` images of every run.

    Use :meth:`hook` as ``evaluate(..., on_output=...)``; crops are ``size`` x ``size`` uint8
    from the image centre (smaller images whole).
    """

    max_images: int = 6
    size: int = 192
    crops: dict[tuple[str, str], list[tuple[str, dict[str, np.ndarray]]]] = field(default_factory=dict)

    def hook(self, dataset: str, noise: str):
        """The ``on_output`` callback for one (dataset, noise) run."""
        kept = self.crops.setdefault((dataset, noise), [])

        def on_output(name: str, repeat: int, clean_u8: np.ndarray, noisy: np.ndarray,
                      outputs: dict[str, np.ndarray]) -> None:
            if repeat != 0 or len(kept) >= self.max_images:
                return
            h, w = clean_u8.shape[:2]
            ch, cw = min(self.size, h), min(self.size, w)
            top, left = (h - ch) // 2, (w - cw) // 2
            cut = (slice(top, top + ch), slice(left, left + cw))
            images = {"noisy": quantize_uint8(noisy[cut])}
            images.update({m: quantize_uint8(o[cut]) for m, o in outputs.items()})
            images["clean"] = np.ascontiguousarray(clean_u8[cut])
            kept.append((name, images))

        return on_output


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None or value != value else f"{value:.{digits}f}"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f0f0f0}
figure{display:inline-block;margin:.3em;text-align:center}
figure img{image-rendering:pixelated;width:192px;height:auto}
.crops{margin-bottom:1.5em}
.note{color:#666}
"""


def write_report(folder: Path, results: Sequence[EvalResult], *, model: str, seed: int,
                 crops: CropCollector | None = None, notes: Sequence[str] = ()) -> Path:
    """Write ``index.html`` and its crop PNGs into ``folder``; returns the page's path."""
    from n2ncli.io.image import write_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    e = html.escape
    methods = list(dict.fromkeys(m for r in results for m in r.methods))
    head = ["dataset", "noise", "images x repeats", "noisy input PSNR / SSIM", "ours PSNR / SSIM"]
    head += [f"{LABELS.get(m, m)} PSNR / SSIM" for m in methods] + ["paper (Table 1) PSNR / SSIM"]
    rows = []
    for r in results:
        s = r.summary()
        cells = [e(r.dataset), e(r.noise), f"{s['images']} x {r.repeats}",
                 f"{_fmt(s['noisy_psnr'], 2)} / {_fmt(s['noisy_ssim'], 4)}",
                 f"<b>{_fmt(s['psnr'], 2)} / {_fmt(s['ssim'], 4)}</b>"]
        for m in methods:
            cells.append(f"{_fmt(r.baseline_mean(m, 'psnr'), 2)} / {_fmt(r.baseline_mean(m, 'ssim'), 4)}"
                         if m in r.methods else "")
        paper = r.paper
        cells.append(f"{paper[0]:.2f} / {paper[1]:.3f}" if paper else "")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>n2n eval: {e(model)}</title><style>{_CSS}</style></head><body>",
        f"<h1>n2n eval: {e(model)}</h1>",
        f'<p class="note">Noise seed {seed}; outputs clamped and quantised as uint8(x&middot;255 + 0.5); '
        "PSNR (peak 255) and SSIM (11&times;11 Gaussian window, &sigma; 1.5) on uint8 images, as the paper. "
        "Paper figures compare only to full runs (all images, the paper's repeats).</p>",
    ]
    parts += [f'<p class="note">{e(n)}</p>' for n in notes]
    parts += ['<h2>Summary</h2><table id="summary"><thead><tr>',
              "".join(f"<th>{e(h)}</th>" for h in head), "</tr></thead><tbody>", *rows, "</tbody></table>"]
    for i, r in enumerate(results):
        title = f"{r.dataset}, {r.noise}"
        parts.append(f"<h2>{e(title)}</h2>")
        kept = crops.crops.get((r.dataset, r.noise), []) if crops else []
        for name, images in kept:
            parts.append(f'<div class="crops"><h3>{e(name)}</h3>')
            for method, pixels in images.items():
                file = f"{i:02d}-{_slug(r.dataset)}-{_slug(r.noise)}-{_slug(Path(name).stem)}-{_slug(method)}.png"
                write_image(folder / file, pixels)
                label = LABELS.get(method, method)
                parts.append(f'<figure><img src="{e(file)}" alt="{e(name)}: {e(label)}">'
                             f"<figcaption>{e(label)}</figcaption></figure>")
            parts.append("</div>")
        cols = ["image", "repeat", "noisy PSNR", "noisy SSIM", "ours PSNR", "ours SSIM"]
        for m in r.methods:
            cols += [f"{LABELS.get(m, m)} PSNR", f"{LABELS.get(m, m)} SSIM"]
        parts.append(f'<table class="per-image" id="images-{i}"><thead><tr>'
                     + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr></thead><tbody>")
        for sc in r.scores:
            cells = [e(sc.name), str(sc.repeat), _fmt(sc.noisy_psnr, 2), _fmt(sc.noisy_ssim, 4),
                     _fmt(sc.psnr, 2), _fmt(sc.ssim, 4)]
            for m in r.methods:
                cells += [_fmt(sc.baselines[m]["psnr"], 2), _fmt(sc.baselines[m]["ssim"], 4)]
            parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    page = folder / "index.html"
    atomic_write_text(page, "\n".join(parts))
    return page
