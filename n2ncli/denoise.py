"""read -> tile -> network -> untile -> write, for one image or a whole folder.

Memory is bounded by the tile: only the input, the stitched output and one batch of tiles are
ever held, so a 100-megapixel photo denoises on a laptop CPU.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from n2ncli.backends import OutOfMemory, Predictor
from n2ncli.bayer import pack, unpack
from n2ncli.device import free_ram
from n2ncli.errors import ConfigError, IncompatibleModelError, N2nError, UnsupportedRawError
from n2ncli.io.image import (ImageData, encode_image, image_format, read_image, read_image_bytes,
                             writable_bit_depth, write_image)
from n2ncli.io.raw import RawData, is_raw, quiet_libraw, read_raw, render, rendered_exif
from n2ncli.jobs import Job, is_stream
from n2ncli.noise_guard import NoiseGuarded, keep_within_noise
from n2ncli.pd import MeanKept, PdSelector, SecondPass
from n2ncli.tiling import Tile, TileAccumulator, tile_grid

RAW_CHANNELS = 4
#: Tiles start on the U-Net's 32-pixel pooling grid, so each tile pools the same cells the
#: whole image would, and tiled output matches whole-image output.
ALIGN = 32


@dataclass(frozen=True)
class TileOptions:
    """``tile`` pixels per side (0 = whole image), ``overlap`` blended pixels, ``batch`` tiles per call.

    ``context`` extra pixels are read around every tile (mirrored at the image border) and
    cropped off after the network: the network then never sees an artificial edge inside the
    image, and the whole-image path sees the same mirrored border as the tiles.
    """

    tile: int = 1024
    overlap: int = 32
    batch: int = 1
    context: int = 64

    def __post_init__(self) -> None:
        if self.tile and (self.tile < 64 or self.tile % ALIGN):
            raise ConfigError(f"--tile must be 0 (whole image) or a multiple of {ALIGN} >= 64, got {self.tile}")
        if self.context % ALIGN:
            raise ConfigError(f"tile context must be a multiple of {ALIGN}, got {self.context}")
        if self.overlap < 0 or (self.tile and self.overlap >= self.tile // 2):
            raise ConfigError(f"--overlap must be >= 0 and under half the tile, got {self.overlap}")
        if self.context < 0:
            raise ConfigError(f"tile context must be >= 0, got {self.context}")
        if self.batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {self.batch}")


#: Tiles are shrunk to cover the image with less overlap (less computed twice), down to this
#: size: below it the 64-px context is too small a share of the tile and seams grow (a 96-px
#: tile gave 1.5/255 against the whole image, 128 px 0.57/255; tests/test_denoise.py).
MIN_BALANCED_TILE = 256
#: Smallest tile an out-of-memory retry goes down to.
MIN_RETRY_TILE = 64


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a backend running out of memory (ours, torch CPU/CUDA, numpy)."""
    if isinstance(exc, (OutOfMemory, MemoryError)):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate" in text)


def _halved(options: TileOptions, h: int, w: int) -> TileOptions | None:
    """The options with half the tile (whole image: half its longer side), or None at the minimum."""
    tile = options.tile or -(-max(h, w) // ALIGN) * ALIGN
    if tile <= MIN_RETRY_TILE:
        return None
    new = max(MIN_RETRY_TILE, tile // 2 // ALIGN * ALIGN)
    overlap = options.overlap if options.overlap < new // 2 else new // 4
    return replace(options, tile=new, overlap=overlap)


def _free_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def denoise_array(image: np.ndarray, predictor: Predictor, options: TileOptions = TileOptions(),
                  on_tile: Callable[[int, int], None] | None = None,
                  on_retry: Callable[[TileOptions, BaseException], None] | None = None) -> np.ndarray:
    """Denoise HxWxC float32 in [0,1] -> HxWxC float32 (unclamped), tiled when larger than a tile.

    When the backend runs out of memory the whole image is redone at half the tile (down to
    ``MIN_RETRY_TILE``); ``on_retry(new_options, error)`` is told before each retry. The last
    out-of-memory error is raised when even the smallest tile does not fit. A
    :class:`~n2ncli.pd.SecondPass` over an image of several tiles runs image by image
    (:func:`_two_passes`); an image in one tile gives it its mirrored context, as before. A
    :class:`~n2ncli.pd.MeanKept` gives the whole output its input's local mean, after all tiles.
    """
    if isinstance(predictor, MeanKept):
        return predictor.after(image, denoise_array(image, predictor.inner, options, on_tile, on_retry))
    while True:
        try:
            if isinstance(predictor, SecondPass) and not _one_tile(image, options):
                return _two_passes(image, predictor, options, on_tile, on_retry)
            return _denoise_array(image, predictor, options, on_tile)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            smaller = _halved(options, *image.shape[:2])
            if smaller is None:
                raise
            _free_cuda_cache()
            if on_retry:
                on_retry(smaller, exc)
            options = smaller


def _one_tile(image: np.ndarray, options: TileOptions) -> bool:
    return not options.tile or (image.shape[0] <= options.tile and image.shape[1] <= options.tile)


def _two_passes(image: np.ndarray, second: SecondPass, options: TileOptions,
                on_tile: Callable[[int, int], None] | None,
                on_retry: Callable[[TileOptions, BaseException], None] | None) -> np.ndarray:
    """A second pass decided once per image: the first pass over every tile, its share from the
    whole image, then the second over the whole first output (each tile's context read from it).

    Deciding per tile let the tiles of one photo take different shares (Kodak JPEGs, sigma 10, in
    256 px tiles: up to -0.15 dB against the whole image) and fed the second pass the first pass's
    mirrored border at every tile edge. Progress counts both passes.
    """
    ticks = None if on_tile is None else (lambda done, total: on_tile(total + done, 2 * total))
    return second.after(image, denoise_array(image, second.inner, options, on_tile, on_retry),
                        lambda once: denoise_array(once, second.inner, options, ticks, on_retry))


def _denoise_array(image: np.ndarray, predictor: Predictor, options: TileOptions,
                   on_tile: Callable[[int, int], None] | None) -> np.ndarray:
    h, w, c = image.shape
    m = options.context
    if _one_tile(image, options):
        out = predictor.predict(_with_context(image, Tile(0, h, 0, w), m)[None])[0]
        if on_tile:
            on_tile(1, 1)
        return out[m:m + h, m:m + w]
    tiles = tile_grid(h, w, options.tile, options.overlap, align=ALIGN, balance=MIN_BALANCED_TILE)
    acc = TileAccumulator(h, w, c, options.overlap)
    by_shape: dict[tuple[int, int], list[Tile]] = {}
    for t in tiles:
        by_shape.setdefault((t.height, t.width), []).append(t)
    done = 0
    for group in by_shape.values():
        for start in range(0, len(group), options.batch):
            chunk = group[start:start + options.batch]
            batch = np.stack([_with_context(image, t, m) for t in chunk])
            for t, out in zip(chunk, predictor.predict(batch)):
                acc.add(t, out[m:m + t.height, m:m + t.width])
            done += len(chunk)
            if on_tile:
                on_tile(done, len(tiles))
    return acc.result()


#: Peak memory per input pixel (tile plus context) of one U-Net call, float32, for backends that
#: do not say (``predictor.bytes_per_pixel``). Measured as the peak RSS growth of one 640x640 call
#: (a 512 tile with 64 px context) on CPU: 1345 B/px with PyTorch (about 96 channels x 4 bytes x
#: 3.5 live maps); rounded up for headroom. ONNX Runtime's arena needs more (backends/onnx.py).
BYTES_PER_PIXEL = 1536
#: Share of the free memory the tiles may use (the image, its output and other programs need the rest).
MEMORY_FRACTION = 0.25
AUTO_TILE_RANGE = (256, 2048)


def auto_tile(free_bytes: int, bytes_per_pixel: float = BYTES_PER_PIXEL, batch: int = 1, context: int = 64,
              fraction: float = MEMORY_FRACTION) -> int:
    """The largest tile side whose ``batch`` tiles (each with ``context`` px around) fit in
    ``fraction`` of ``free_bytes``; a multiple of 32 clamped to ``AUTO_TILE_RANGE``."""
    if batch < 1 or bytes_per_pixel <= 0:
        raise ConfigError(f"batch and bytes per pixel must be positive, got {batch}, {bytes_per_pixel}")
    budget = max(0.0, free_bytes * fraction)
    side = int(math.sqrt(budget / (batch * bytes_per_pixel))) - 2 * context
    lo, hi = AUTO_TILE_RANGE
    return min(hi, max(lo, side // ALIGN * ALIGN))


def free_memory(predictor: Predictor) -> int:
    """Free bytes where ``predictor`` computes: GPU memory for CUDA torch or ORT, else RAM."""
    device = getattr(predictor, "device", None)
    provider = str(getattr(predictor, "provider", ""))
    on_gpu = getattr(device, "type", None) == "cuda" or provider.startswith(("CUDA", "Tensorrt"))
    if on_gpu:
        import torch

        if torch.cuda.is_available():
            index = getattr(device, "index", None)
            free, _ = torch.cuda.mem_get_info(index if index is not None else 0)
            return int(free)
    return free_ram()


def choose_tile(predictor: Predictor, batch: int = 1, context: int = 64) -> int:
    """``auto_tile`` for the memory free where ``predictor`` runs now."""
    per_pixel = getattr(predictor, "bytes_per_pixel", BYTES_PER_PIXEL)
    return auto_tile(free_memory(predictor), per_pixel, batch, context)


def mirror_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map any integer positions into [0, n) by mirroring at the ends (..., 2, 1, 0, 1, 2, ...)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def _with_context(image: np.ndarray, t: Tile, margin: int) -> np.ndarray:
    """The tile plus ``margin`` pixels of surrounding image on each side, mirrored at the border."""
    h, w = image.shape[:2]
    y0, y1, x0, x1 = t.y0 - margin, t.y1 + margin, t.x0 - margin, t.x1 + margin
    if y0 >= 0 and x0 >= 0 and y1 <= h and x1 <= w:
        return image[y0:y1, x0:x1]
    ys = mirror_index(np.arange(y0, y1), h)
    xs = mirror_index(np.arange(x0, x1), w)
    return image[np.ix_(ys, xs)]


def denoise_image_data(data: ImageData, predictor: Predictor, options: TileOptions = TileOptions(),
                       on_tile: Callable[[int, int], None] | None = None,
                       on_retry: Callable[[TileOptions, BaseException], None] | None = None) -> np.ndarray:
    """Denoise a decoded image; grey photos run through an RGB model as three equal channels.

    A ``PdSelector`` predictor picks its pixel-shuffle stride for this image first (``--pd``).

    Float images (float TIFF) may hold values outside [0, 1]: highlights above 1 from HDR merges
    and scene-referred edits, negatives from wide-gamut conversions. The network only knows
    [0, 1], so it denoises each pixel clipped to [0, 1] (NaN seen as 0, +inf as 1) and what the
    clipping cut off is added back unchanged afterwards: in-range pixels are denoised exactly as
    in an 8/16-bit image, out-of-range ones keep their excess over 1 (or below 0) as it was, not
    denoised, so highlights stay above 1, negatives stay negative, NaN and infinities stay where
    they were, and a model that changes nothing gives the input back bit for bit.
    """
    pixels = data.to_float()
    excess = data.pixels - pixels if data.is_float else None
    if isinstance(predictor, PdSelector):
        predictor = predictor.for_image(pixels)
    c = pixels.shape[2]
    if c == predictor.channels:
        out = denoise_array(pixels, predictor, options, on_tile, on_retry)
    elif c == 1 and predictor.channels == 3:
        out = denoise_array(np.repeat(pixels, 3, axis=2), predictor, options, on_tile, on_retry)
        out = out.mean(axis=2, keepdims=True)
    else:
        raise IncompatibleModelError(
            f"{data.source}: the model takes {predictor.channels}-channel input, the image has {c}")
    if excess is not None:
        out += excess
    return out


def denoise_raw(raw: RawData, predictor: Predictor, options: TileOptions = TileOptions(),
                on_tile: Callable[[int, int], None] | None = None,
                on_retry: Callable[[TileOptions, BaseException], None] | None = None) -> np.ndarray:
    """Denoise a Bayer raw on its packed RGGB cells; returns the whole-sensor mosaic in DN (uint16).

    Tiles are laid on the packed grid, so every tile edge falls between 2x2 cells of the mosaic.
    A ``NoiseGuarded`` predictor's change is then kept within the noise measured on this raw, and
    a ``MeanKept`` one (around it) gives the result back the packed input's local mean.
    """
    if predictor.channels != RAW_CHANNELS:
        raise IncompatibleModelError(f"{raw.source}: raw files need a raw model (4 channels); "
                                     f"this model takes {predictor.channels}-channel sRGB input")
    packed, layout = pack(raw.normalised(), raw.pattern)
    kept = predictor if isinstance(predictor, MeanKept) else None
    if kept is not None:
        predictor = kept.inner
    guarded = isinstance(predictor, NoiseGuarded)
    out = denoise_array(packed, predictor.inner if guarded else predictor, options, on_tile, on_retry)
    if guarded:
        out = keep_within_noise(packed, out)
    if kept is not None:
        out = kept.after(packed, out)
    return raw.with_visible(raw.to_dn(unpack(out, layout)))


@dataclass(frozen=True)
class OutputSettings:
    """How outputs are written: raws' ``linear`` 16-bit renders and the record DNGs carry; the
    ``quality`` of lossy formats (None: the input's own where it was the same lossy format, else
    the format's default); ``stream_format`` for stdout (None: the input's format);
    ``dng_compression``, one of ``n2ncli.io.dng.DNG_COMPRESSIONS`` (lossless JPEG or none)."""

    linear: bool = False
    software: str = "n2ncli"
    record: dict | None = None
    quality: int | None = None
    stream_format: str | None = None
    dng_compression: str = "lossless"


def output_bit_depth(source_depth: int, fmt: str) -> int:
    """The source's depth where ``fmt`` (an extension or format name) keeps it: float (32) only
    into TIFF, 16-bit into PNG, TIFF and HEIF (10 bits), JPEG, WebP and AVIF are 8-bit."""
    return min(source_depth, writable_bit_depth(fmt))


def read_input(path: Path, develop: bool = False) -> ImageData | RawData:
    """A raw file (by extension) through LibRaw, ``-`` as an image on stdin, anything else as an image.

    ``develop``: LibRaw's decoded state is still needed after the network (a development, or a
    non-DNG source's metadata for its DNG), so it is kept and the file is decoded once."""
    if is_stream(path):
        return read_image_bytes(sys.stdin.buffer.read(), "<stdin>")
    return read_raw(path, keep_decoded=develop) if is_raw(path) else read_image(path)


def _keeps_decoded(job: Job) -> bool:
    """Whether the raw's decoded state is needed after the network: for a development (an image
    target), or for a non-DNG source's metadata in its DNG, so the file is decoded once."""
    return job.kind == "raw" and (job.target.suffix.lower() != ".dng" or job.source.suffix.lower() != ".dng")


def lossy_settings(data: ImageData, fmt: str, quality: int | None) -> tuple[int | None, str | None]:
    """(quality, chroma subsampling) for writing ``data`` as ``fmt``: an input of that same lossy
    format is matched (a 4:2:0 camera JPEG at about its own quality), ``quality`` overrides."""
    same = data.format == image_format(fmt)
    return (quality if quality is not None else (data.quality if same else None),
            data.subsampling if same else None)


def denoise_input(data: ImageData | RawData, predictor: Predictor, options: TileOptions = TileOptions(),
                  on_tile: Callable[[int, int], None] | None = None,
                  on_retry: Callable[[TileOptions, BaseException], None] | None = None) -> np.ndarray:
    """Image -> HxWxC float32; raw -> whole-sensor uint16 mosaic."""
    if isinstance(data, RawData):
        return denoise_raw(data, predictor, options, on_tile, on_retry)
    return denoise_image_data(data, predictor, options, on_tile, on_retry)


def _write(job: Job, data: ImageData | RawData, out: np.ndarray, writing: OutputSettings = OutputSettings()) -> None:
    if isinstance(data, RawData):
        if job.target.suffix.lower() == ".dng":
            from n2ncli.io.dng import write_dng

            # a non-DNG source's tags come from LibRaw, which may talk on stderr (and must not)
            decoded = data.decoded.take() if data.decoded is not None else None
            try:
                with quiet_libraw(data.source) if data.source.suffix.lower() != ".dng" else nullcontext():
                    write_dng(job.target, out, data.source, software=writing.software, record=writing.record or {},
                              compression=writing.dng_compression, decoded=decoded)
            finally:
                if decoded is not None:
                    decoded.close()
            return
        exif = rendered_exif(data)  # before render, which releases the decoded state
        rgb = render(data, out, linear=writing.linear)
        depth = min(16, writable_bit_depth(job.target.suffix))
        write_image(job.target, rgb.astype(np.float32) / np.float32(65535), bit_depth=depth,
                    exif=exif, quality=writing.quality)
        return
    pixels = out if data.is_float else np.clip(out, 0.0, 1.0)  # float: kept as is in TIFF, clipped by other formats
    stream = is_stream(job.target)
    fmt = (writing.stream_format or data.format) if stream else job.target.suffix
    quality, subsampling = lossy_settings(data, fmt, writing.quality)
    settings = {"bit_depth": output_bit_depth(data.bit_depth, fmt), "exif": data.exif, "icc_profile": data.icc_profile,
                "quality": quality, "subsampling": subsampling}
    if stream:
        sys.stdout.buffer.write(encode_image(pixels, fmt, **settings))
        sys.stdout.buffer.flush()
    else:
        write_image(job.target, pixels, **settings)


def run_job(job: Job, predictor: Predictor, options: TileOptions = TileOptions(),
            on_tile: Callable[[int, int], None] | None = None,
            on_retry: Callable[[TileOptions, BaseException], None] | None = None,
            writing: OutputSettings = OutputSettings()) -> tuple[str, ...]:
    """Denoise one file into its target; returns the reader's warnings for the user."""
    data = read_input(job.source, _keeps_decoded(job))
    out = denoise_input(data, predictor, options, on_tile, on_retry)
    _write(job, data, out, writing)
    return data.warnings


@dataclass
class BatchResult:
    """What a run of many files did: outputs written, files that failed or were skipped (raws of
    a kind n2n does not denoise, found when decoding; with the one-line reason), and the tile
    options the last file ran with (after any out-of-memory retry)."""

    options: TileOptions
    written: list[Job]
    failed: list[tuple[Job, str]]
    skipped: list[tuple[Job, str]] = field(default_factory=list)


def failure_line(job: Job, exc: BaseException) -> str:
    """One line naming the file and why it failed, whatever raised (LibRaw, Pillow, our own)."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, N2nError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    source = "<stdin>" if is_stream(job.source) else str(job.source)
    target = "<stdout>" if is_stream(job.target) else str(job.target)
    return text if source in text or target in text else f"{source}: {text}"


def run_jobs(jobs: Sequence[Job], predictor: Predictor | Mapping[str, Predictor], options: TileOptions = TileOptions(), *,
             workers: int = 2, ahead: int = 2,
             on_start: Callable[[Job], None] | None = None,
             on_tile: Callable[[int, int], None] | None = None,
             on_done: Callable[[Job, tuple[str, ...]], None] | None = None,
             on_failed: Callable[[Job, str], None] | None = None,
             on_retry: Callable[[TileOptions, BaseException], None] | None = None,
             on_skipped: Callable[[Job, str], None] | None = None,
             writing: OutputSettings = OutputSettings()) -> BatchResult:
    """Denoise many files with decoding and encoding overlapped with the network.

    Reader threads decode up to ``ahead`` images beyond the one the network is on, writer
    threads encode finished ones (at most ``ahead`` waiting), so memory stays bounded by about
    ``2 * ahead + 1`` images. The network and every callback run on the calling thread, in job
    order: ``on_start(job)`` before a file's tiles, ``on_tile(done, total)``, ``on_done(job,
    warnings)`` once its output is on disk. Outputs are the same bytes as ``run_job`` one by one.
    ``predictor`` may map job kinds ("srgb", "raw") to predictors, for folders holding both.

    A file that cannot be read, denoised or written is reported to ``on_failed(job, line)`` and
    the run goes on with the next one; writes are atomic, so no partial output file is ever
    left. A raw whose decode shows it is of a kind n2n does not denoise (UnsupportedRawError, as
    the header probe would have said) goes to ``on_skipped(job, line)`` instead. Only Ctrl-C (or
    a bug's exception outside a file's work) stops the run, after the writes in flight complete.
    After an out-of-memory retry the smaller tile is kept for the remaining files.
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if ahead < 1:
        raise ConfigError(f"ahead must be >= 1, got {ahead}")
    result = BatchResult(options, [], [])

    def retried(new: TileOptions, exc: BaseException) -> None:
        result.options = new
        if on_retry:
            on_retry(new, exc)

    def failed(job: Job, exc: BaseException) -> None:
        line = failure_line(job, exc)
        if isinstance(exc, UnsupportedRawError):
            result.skipped.append((job, line))
            if on_skipped:
                on_skipped(job, line)
            return
        result.failed.append((job, line))
        if on_failed:
            on_failed(job, line)

    readers = ThreadPoolExecutor(workers, thread_name_prefix="n2n-read")
    writers = ThreadPoolExecutor(workers, thread_name_prefix="n2n-write")
    queue = iter(jobs)
    reads: deque[tuple[Job, Future[ImageData | RawData]]] = deque()
    writes: deque[tuple[Job, tuple[str, ...], Future[None]]] = deque()

    def read_more() -> None:
        while len(reads) <= ahead:
            job = next(queue, None)
            if job is None:
                return
            reads.append((job, readers.submit(read_input, job.source, _keeps_decoded(job))))

    def finish_write() -> None:
        job, warnings, fut = writes.popleft()
        try:
            fut.result()
        except Exception as exc:  # noqa: BLE001 - any encoder or disk error fails this file only
            failed(job, exc)
            return
        result.written.append(job)
        if on_done:
            on_done(job, warnings)

    def tile_done(done: int, total: int) -> None:
        while writes and writes[0][2].done():  # a finished write is reported now, not after this file
            finish_write()
        if on_tile:
            on_tile(done, total)

    try:
        read_more()
        while reads:
            job, fut = reads.popleft()
            read_more()
            try:
                data = fut.result()
                if on_start:
                    on_start(job)
                net = predictor[job.kind] if isinstance(predictor, Mapping) else predictor
                out = denoise_input(data, net, result.options, tile_done, retried)
            except Exception as exc:  # noqa: BLE001 - a decoder's or backend's error fails this file only
                failed(job, exc)
                continue
            writes.append((job, data.warnings, writers.submit(_write, job, data, out, writing)))
            del data, out
            while writes and (writes[0][2].done() or len(writes) > ahead):
                finish_write()
        while writes:
            finish_write()
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True)  # writes in flight complete, so no file is half-done
    return result
