#!/usr/bin/env python3
"""PyTorch baseline of mirad's backbone runner: builds the SAME graph JSON + safetensors
(docs/GRAPH_FORMAT.md) as a torch function (F.conv2d with an explicit F.pad for TF-SAME), times
the forward pass at the given batch sizes and prints one JSON line per case. With --check it
also runs the reference photos (preprocessed as expected.json says, with PIL) and prints the
top-1 classes and tap statistics, to cross-check mirad's numbers.

safetensors is parsed here with numpy (8-byte header length, JSON header, raw little-endian
data), so no safetensors package is needed. Run with Debian's python3-torch on OpenBLAS: the
reference BLAS is ~15x slower and would make the comparison meaningless.
"""
import argparse
import json
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = raw[base + b:base + e]
        if info["dtype"] == "BF16":
            # bfloat16 is the top half of a float32.
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(buf, dtype=np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(a.astype(np.float32).reshape(info["shape"]).copy())
    return out


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def same_pads(size, k, s, d):
    # TensorFlow SAME: total = max((ceil(in/s)-1)*s + k_eff - in, 0), floor half before.
    k_eff = (k - 1) * d + 1
    total = max((math.ceil(size / s) - 1) * s + k_eff - size, 0)
    return total // 2, total - total // 2


def pads_for(op, h, w, kh, kw, sh, sw, dh, dw):
    if "pads" in op:
        return tuple(op["pads"])  # top, bottom, left, right
    if op.get("padding", "VALID") == "SAME":
        return same_pads(h, kh, sh, dh) + same_pads(w, kw, sw, dw)
    return (0, 0, 0, 0)


def activation(x, act):
    if act == "relu":
        return F.relu(x)
    if act == "relu6":
        return F.hardtanh(x, 0.0, 6.0)
    return x


class GraphModule:
    """Runs graph.json op by op; forward(x, last_op) returns {op index: output}."""

    def __init__(self, graph, weights):
        self.ops = graph["ops"]
        self.input = graph["input"]
        self.w = weights

    def forward(self, x, last_op=None, taps=()):
        env = {self.input: x}
        last = len(self.ops) - 1 if last_op is None else last_op
        got = {}
        for i, op in enumerate(self.ops[:last + 1]):
            t = op["op"]
            a = env[op["inputs"][0]]
            if t in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                wt = self.w[op["weight"]]
                b = self.w.get(op.get("bias")) if op.get("bias") else None
                sh, sw = pair(op.get("stride", 1))
                dh, dw = pair(op.get("dilation", 1))
                groups = a.shape[1] if t == "DEPTHWISE_CONV_2D" else op.get("groups", 1)
                pt, pb, pl, pr = pads_for(op, a.shape[2], a.shape[3], wt.shape[2], wt.shape[3],
                                          sh, sw, dh, dw)
                if pt or pb or pl or pr:
                    a = F.pad(a, (pl, pr, pt, pb))
                y = activation(F.conv2d(a, wt, b, (sh, sw), 0, (dh, dw), groups),
                               op.get("act", "none"))
            elif t == "ADD":
                y = activation(a + env[op["inputs"][1]], op.get("act", "none"))
            elif t == "RELU":
                y = F.relu(a)
            elif t == "RELU6":
                y = F.hardtanh(a, 0.0, 6.0)
            elif t in ("MAX_POOL_2D", "AVERAGE_POOL_2D") and "kernel" in op:
                kh, kw = pair(op["kernel"])
                sh, sw = pair(op["stride"])
                pt, pb, pl, pr = pads_for(op, a.shape[2], a.shape[3], kh, kw, sh, sw, 1, 1)
                if t == "MAX_POOL_2D":
                    a = F.pad(a, (pl, pr, pt, pb), value=-math.inf)
                    y = F.max_pool2d(a, (kh, kw), (sh, sw))
                else:
                    ones = F.pad(torch.ones_like(a[:1, :1]), (pl, pr, pt, pb))
                    a = F.pad(a, (pl, pr, pt, pb))
                    y = F.avg_pool2d(a, (kh, kw), (sh, sw))
                    if not op.get("count_include_pad", False):
                        y = y / F.avg_pool2d(ones, (kh, kw), (sh, sw))
            elif t == "AVERAGE_POOL_2D":
                y = a.mean(dim=(2, 3), keepdim=True)
            elif t == "RESHAPE":
                y = a.reshape(a.shape[0], -1)
            elif t == "FULLY_CONNECTED":
                b = self.w.get(op.get("bias")) if op.get("bias") else None
                y = activation(F.linear(a.reshape(a.shape[0], -1), self.w[op["weight"]], b),
                               op.get("act", "none"))
            elif t == "SOFTMAX":
                y = F.softmax(a, dim=1)
            else:
                raise ValueError(f"op {i}: unknown op type {t}")
            env[op["output"]] = y
            if i in taps:
                got[i] = y
        got[last] = env[self.ops[last]["output"]]
        return got


def preprocess(path, size=224):
    from PIL import Image
    im = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    a = (np.asarray(im, dtype=np.float32) - 128.0) / 128.0
    return torch.from_numpy(a.transpose(2, 0, 1).copy())[None]


def bench(fn, min_time):
    fn()  # warm-up: oneDNN/OpenBLAS set-up and first-touch allocations
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - start
        if el >= min_time and n >= 3:
            return el / n


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    shared = os.environ.get("MIRAD_SHARED", os.path.join(here, "..", "..", "..", "shared"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph-dir", default=os.path.join(shared, "weights", "mobilenet_v2_imagenet"))
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--check", action="store_true", help="print top-1 and tap stats on fixtures")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.randn(64, 64) @ torch.randn(64, 64)  # load the BLAS, then read which one it is
    libs = [l.split()[-1] for l in open("/proc/self/maps") if "blas" in l.lower()]
    blas = "openblas" if any("openblas" in l for l in libs) else (libs[0] if libs else "unknown")
    graph = json.load(open(os.path.join(a.graph_dir, "graph.json")))
    model = GraphModule(graph, load_safetensors(os.path.join(a.graph_dir, "weights.safetensors")))

    if a.check:
        exp = json.load(open(os.path.join(a.graph_dir, "expected.json")))
        fixtures = os.path.join(shared, "fixtures", "imagenet")
        for r in exp["results"]:
            x = preprocess(os.path.join(fixtures, r["image"]))
            with torch.no_grad():
                got = model.forward(x, taps=(9, 20, 46))
            probs = got[len(graph["ops"]) - 1][0]
            top = int(torch.argmax(probs))
            taps = {str(k): {"shape": list(got[k].shape), "mean": float(got[k].double().mean()),
                             "std": float(got[k].double().std(unbiased=False))}
                    for k in (9, 20, 46)}
            print(json.dumps({"image": r["image"], "top1": top, "prob": float(probs[top]),
                              "expected_top1": r["top1"], "taps": taps}))

    for batch in map(int, a.batches.split(",")):
        x = torch.randn(batch, 3, a.size, a.size, generator=torch.Generator().manual_seed(1))

        def run():
            with torch.no_grad():
                model.forward(x)

        ms = bench(run, a.min_time) * 1e3
        print(json.dumps({"case": "mobilenet_v2_forward", "batch": batch, "size": a.size,
                          "threads": a.threads, "ms": ms, "torch": torch.__version__,
                          "blas": blas, "mkldnn": torch.backends.mkldnn.is_available()}))


if __name__ == "__main__":
    main()
