#!/usr/bin/env python3
"""Pillow baseline for bench_decode: the same files (written by mirad_bench's BM_DecodeResize
into $TMPDIR/mirad_bench_decode), decoded, converted to RGB, resized to 224x224 bilinear and
normalised to float32 CHW with numpy, one thread. Prints images/s per format."""
import glob
import os
import tempfile
import time

import numpy as np
from PIL import Image

d = os.path.join(tempfile.gettempdir(), "mirad_bench_decode")
mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
for ext in ("png", "jpg"):
    files = sorted(glob.glob(os.path.join(d, "*." + ext)))
    if not files:
        print(f"no .{ext} files in {d}: run mirad_bench --benchmark_filter=Decode first")
        continue
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 2.0:
        for f in files:
            im = Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)
            x = (np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0 - mean) / std
            n += 1
    dt = time.perf_counter() - t0
    print(f"Pillow {Image.__version__} {ext}: {n / dt:.1f} images/s (1 thread)")
