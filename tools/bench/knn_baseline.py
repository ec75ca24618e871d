#!/usr/bin/env python3
"""A simple nearest-neighbour baseline on CNN features (PatchCore without the coreset): every
test position's distance to its nearest training position, image score = the largest. Runs
`mirad embed` on each MVTec-layout category (train/good and test/*), then scores with numpy.
Prints per-category image AUROC; used to check that a generated benchmark is not trivially
solved. Usage: knn_baseline.py DATASET_ROOT [--mirad build/tools/mirad] [--backbone NAME]
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=np.float32).reshape(t["shape"])
    return out, meta


def embed(mirad, backbone, paths, out, device):
    cmd = [mirad, "embed", *paths, "--out", out, "--backbone", backbone, "--device", device,
           "--json"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    feats, meta = read_safetensors(out)
    return feats, json.loads(meta["images"])


def positions(feats):
    """[N, P, D]: stride-8 features pooled 2x2 to stride 16, concatenated with stride 16."""
    names = sorted(feats, key=lambda k: -feats[k].shape[2])  # finer map first
    fine, coarse = feats[names[0]], feats[names[-1]]
    n, c, h, w = coarse.shape
    f = fine[:, :, : 2 * h, : 2 * w].reshape(n, fine.shape[1], h, 2, w, 2).mean((3, 5))
    x = np.concatenate([f, coarse], 1)
    return x.reshape(n, x.shape[1], h * w).transpose(0, 2, 1).astype(np.float32)


def nearest_distance(test, bank, chunk=4096):
    bank_sq = (bank * bank).sum(1)
    out = np.empty(len(test), np.float32)
    for i in range(0, len(test), chunk):
        t = test[i:i + chunk]
        d = (t * t).sum(1)[:, None] - 2 * t @ bank.T + bank_sq[None, :]
        out[i:i + chunk] = np.sqrt(np.maximum(d.min(1), 0))
    return out


def auroc(scores, labels):
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    s = scores[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j < len(s) and s[j] == s[i]:
            j += 1
        ranks[order[i:j]] = 0.5 * (i + j - 1) + 1
        i = j
    npos, nneg = labels.sum(), (~labels).sum()
    return (ranks[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--mirad", default="build/tools/mirad")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    cats = sorted(d for d in os.listdir(a.root) if os.path.isdir(os.path.join(a.root, d, "train")))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cat in cats:
            base = os.path.join(a.root, cat)
            train, _ = embed(a.mirad, a.backbone, [os.path.join(base, "train", "good")],
                             os.path.join(tmp, "train.safetensors"), a.device)
            test, paths = embed(a.mirad, a.backbone, [os.path.join(base, "test")],
                                os.path.join(tmp, "test.safetensors"), a.device)
            bank = positions(train).reshape(-1, positions(train).shape[2])
            tp = positions(test)
            d = nearest_distance(tp.reshape(-1, tp.shape[2]), bank).reshape(tp.shape[0], -1)
            scores = d.max(1)
            labels = [os.path.basename(os.path.dirname(p)) != "good" for p in paths]
            results[cat] = auroc(scores, labels)
            print(f"{cat:18} image AUROC {results[cat]:.3f}  ({sum(labels)} defective, "
                  f"{len(labels) - sum(labels)} good test images, {len(bank)} bank vectors)",
                  flush=True)
    print(f"{'mean':18} image AUROC {np.mean(list(results.values())):.3f}")


if __name__ == "__main__":
    sys.exit(main())
