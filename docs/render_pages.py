"""Render built pages of the site to PNG with headless Chromium and check they are not empty.

``python docs/render_pages.py BUILD_HTML_DIR OUT_DIR [PAGE ...]`` renders each page (default:
the home page and the kd_train API page), then fails unless every PNG has the expected size
and real content: at least 1% of its pixels differ from the background colour. Chromium
comes from the system (Debian: ``apt-get install chromium``); nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_PAGES = ("index.html", "api/kd_train.html")
WIDTH, HEIGHT = 1280, 1600
# Flags that keep a headless Chromium off the network (this machine has none) and quiet.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_chromium() -> str:
    """Return the path of a Chromium or Chrome binary, or exit with how to install one."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("render_pages: no chromium on PATH (Debian: apt-get install chromium)")


def render(chromium: str, page: Path, png: Path) -> None:
    """Screenshot ``page`` (a local HTML file) into ``png``."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                f"--screenshot={png}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def content_fraction(png: Path) -> float:
    """Fraction of pixels that differ from the top-left (background) pixel."""
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB"))
    differs = (rgb != rgb[0, 0]).any(axis=-1)
    return float(differs.mean())


def main(argv: list[str]) -> int:
    """Render the pages named in ``argv``; return 1 when any page is missing or blank."""
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    html, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium()
    failed = 0
    for name in argv[2:] or DEFAULT_PAGES:
        page = html / name
        if not page.is_file():
            print(f"render_pages: {page} does not exist", file=sys.stderr)
            failed += 1
            continue
        png = out / (name.replace("/", "_").removesuffix(".html") + ".png")
        render(chromium, page, png)
        with Image.open(png) as image:
            size = image.size
        fraction = content_fraction(png)
        ok = size == (WIDTH, HEIGHT) and fraction >= 0.01
        failed += not ok
        verdict = "ok" if ok else "BLANK"
        print(f"{name:24s} -> {png}  {size[0]}x{size[1]}  content {fraction:.1%}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
