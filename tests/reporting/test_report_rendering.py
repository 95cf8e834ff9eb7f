"""The HTML report as a browser renders it: headless Chromium takes a screenshot and
the test counts the coloured cells in its pixels."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pytest

if TYPE_CHECKING:
    from tests.reporting.conftest import Project

# Background colours of the report's CSS (.mismatch, .allowed, .blocked).
MISMATCH_RED = (0xD1, 0x24, 0x2F)
ALLOWED_GREEN = (0x2D, 0xA4, 0x4E)
BLOCKED_GREY = (0x8C, 0x95, 0x9F)

WINDOW = (1280, 2000)

NOBODY_PEER = "{podSelector: {matchLabels: {app: nobody}}}"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the rendered report cannot be checked")


def run_chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        # The page is a local file; resolve no host name at all.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, timeout=90, check=True)


# -- a PNG reader just large enough for Chromium's screenshots --------------------------


def read_png(data: bytes) -> npt.NDArray[np.uint8]:
    """8-bit RGB or RGBA, not interlaced → array of shape (height, width, 3)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, compressed = 8, bytearray()
    width = height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            compressed += body
    raw = zlib.decompress(bytes(compressed))
    stride = width * bpp
    image = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        start = y * (stride + 1)
        filter_type = raw[start]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=start + 1).astype(np.int32)
        if filter_type == 0:
            row = line
        elif filter_type == 1:  # Sub: running sum per channel
            row = np.cumsum(line.reshape(-1, bpp), axis=0).reshape(-1) & 0xFF
        elif filter_type == 2:  # Up
            row = (line + previous) & 0xFF
        else:  # Average and Paeth depend on the byte just decoded: one byte at a time
            row = np.frombuffer(
                _unfilter_sequential(filter_type, bytes(line.astype(np.uint8)), bytes(previous.astype(np.uint8)), bpp),
                dtype=np.uint8,
            ).astype(np.int32)
        image[y] = row
        previous = row
    return image.reshape(height, width, bpp)[:, :, :3]


def _unfilter_sequential(kind: int, line: bytes, prior: bytes, bpp: int) -> bytes:
    out = bytearray(line)
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        up = prior[i]
        if kind == 3:
            out[i] = (out[i] + ((left + up) >> 1)) & 0xFF
            continue
        corner = prior[i - bpp] if i >= bpp else 0
        estimate = left + up - corner
        pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
        predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
        out[i] = (out[i] + predictor) & 0xFF
    return bytes(out)


def regions(image: npt.NDArray[np.uint8], colour: tuple[int, int, int], tolerance: int = 10, min_pixels: int = 40) -> int:
    """Connected areas of ``colour`` (text and anti-aliased edges left aside)."""
    mask = np.abs(image.astype(np.int32) - np.array(colour)).max(axis=2) <= tolerance
    seen = np.zeros_like(mask)
    height, width = mask.shape
    count = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        seen[y, x] = True
        size, queue = 0, deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            size += 1
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if size >= min_pixels:
            count += 1
    return count


# -- the test ---------------------------------------------------------------------------


def test_rendered_report_shows_one_red_cell_per_mismatch(project: Project, tmp_path: Path) -> None:
    project.shop(project.TOOLS_PEER, name="shop-tools")  # 2 wrong cells, 4 allowed
    project.shop(NOBODY_PEER, name="shop-nobody")  # 1 wrong cell, 1 blocked, 4 allowed
    project.shop(name="shop-ok")  # passes: 5 allowed, 1 blocked, folded away
    project.run("--report-dir", "out").assert_outcomes(passed=1, failed=2)
    page = project.path / "out" / "index.html"
    reports = {n: json.loads((project.path / "out" / f"{n}.json").read_text()) for n in ("shop-tools", "shop-nobody")}
    assert {n: r["mismatches"] for n, r in reports.items()} == {"shop-tools": 2, "shop-nobody": 1}

    # In the DOM: every cell of every scenario.
    dom = run_chromium(page, tmp_path / "profile-dom", "--dump-dom").stdout.decode()
    classes = re.findall(r'<td class="(cell [^"]*)"', dom)
    assert (classes.count("cell mismatch"), classes.count("cell allowed"), classes.count("cell blocked")) == (3, 13, 2)

    # On screen: the failing scenarios' cells, each in its colour, the passing one
    # folded; each colour once more as a legend swatch.
    shot = tmp_path / "report.png"
    run_chromium(page, tmp_path / "profile-shot", f"--screenshot={shot}")
    image = read_png(shot.read_bytes())
    assert image.shape == (WINDOW[1], WINDOW[0], 3)
    assert regions(image, MISMATCH_RED) == 3 + 1
    assert regions(image, ALLOWED_GREEN) == 4 + 4 + 1
    assert regions(image, BLOCKED_GREY) == 1 + 1


def test_png_reader_reads_every_filter_type() -> None:
    # A 3×2 RGB image, one row per filter type, encoded by hand.
    pixels = [[(10, 20, 30), (40, 50, 60), (70, 80, 90)], [(15, 25, 35), (45, 55, 65), (75, 85, 95)]]
    flat = [bytes(v for px in row for v in px) for row in pixels]

    def encode(kind: int, row: bytes, prior: bytes) -> bytes:
        out = bytearray()
        for i, value in enumerate(row):
            left = row[i - 3] if i >= 3 else 0
            up = prior[i]
            corner = prior[i - 3] if i >= 3 else 0
            estimate = left + up - corner
            pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
            paeth = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
            predictor = {0: 0, 1: left, 2: up, 3: (left + up) >> 1, 4: paeth}[kind]
            out.append((value - predictor) & 0xFF)
        return bytes([kind]) + bytes(out)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    for first, second in ((0, 1), (2, 3), (4, 4), (1, 2)):
        raw = encode(first, flat[0], bytes(9)) + encode(second, flat[1], flat[0])
        png = (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b"")
        )
        assert read_png(png).tolist() == [[list(px) for px in row] for row in pixels]
