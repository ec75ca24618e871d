"""Independent numpy executor for mirad backbone graphs (graph.json + weights.safetensors).

It is deliberately plain: a convolution is a sum over kernel offsets of one tensordot each, a
pool is a max/sum over kernel offsets, all in float64. It shares no code with the C++ engine,
so agreement between the two is evidence that both follow docs/GRAPH_FORMAT.md.

Command line:
  python3 tools/convert/reference_runner.py MODEL_DIR IMAGE... [--norm PRESET] [--size N]
prints the top-5 classes and the shape, mean and std at every tap for each image.
"""

import argparse
import json
import math
import os
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

# The normalisation presets of host/resize.h, on the 0..1 scale: x = (u8/255 - mean) / std.
NORM_PRESETS = {
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "tf_inception": ([128 / 255] * 3, [128 / 255] * 3),
    "efficientnet_lite": ([127 / 255] * 3, [128 / 255] * 3),
    "unit": ([0.0] * 3, [1.0] * 3),
}

_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_KNOWN_OPS = _CONV_OPS + ("ADD", "RELU", "RELU6", "MAX_POOL_2D", "AVERAGE_POOL_2D",
                          "FULLY_CONNECTED", "RESHAPE", "SOFTMAX")


class GraphError(ValueError):
    """A graph that does not follow docs/GRAPH_FORMAT.md or does not match its weights."""


def _pair(value, what):
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 \
            and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise GraphError(f"{what} must be an int or [h, w], got {value!r}")


def _pads(op, in_hw, kernel, stride, dilation):
    """[top, bottom, left, right] from explicit pads, "SAME" (TensorFlow) or "VALID"."""
    if "pads" in op:
        pads = op["pads"]
        if not (isinstance(pads, list) and len(pads) == 4 and all(isinstance(p, int) and p >= 0
                                                                  for p in pads)):
            raise GraphError(f"pads must be 4 non-negative ints, got {pads!r}")
        return pads
    mode = op.get("padding", "VALID")
    if mode == "VALID":
        return [0, 0, 0, 0]
    if mode != "SAME":
        raise GraphError(f"unknown padding {mode!r}")
    out = []
    for size, k, s, d in zip(in_hw, kernel, stride, dilation):
        k_eff = (k - 1) * d + 1
        total = max((math.ceil(size / s) - 1) * s + k_eff - size, 0)
        out += [total // 2, total - total // 2]
    return out


def _windows(x, pads, kernel, stride, dilation, fill):
    """Yields (ky, kx, slice) for each kernel offset: the padded input sampled at that offset
    for every output position. Output size follows from the padded size, as in the doc."""
    n, c, h, w = x.shape
    top, bottom, left, right = pads
    padded = np.full((n, c, h + top + bottom, w + left + right), fill, dtype=x.dtype)
    padded[:, :, top:top + h, left:left + w] = x
    kh, kw = kernel
    (sh, sw), (dh, dw) = stride, dilation
    oh = (padded.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (padded.shape[3] - (kw - 1) * dw - 1) // sw + 1
    if oh <= 0 or ow <= 0:
        raise GraphError(f"kernel {kernel} larger than padded input {padded.shape[2:]}")
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            yield ky, kx, padded[:, :, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw]


def conv2d(x, weight, bias, stride=1, pads=(0, 0, 0, 0), dilation=1, groups=1):
    """NCHW convolution with OIHW weights, as a sum over kernel offsets."""
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    n, c, _, _ = x.shape
    o, ipg, kh, kw = weight.shape
    if c % groups or o % groups or c // groups != ipg:
        raise GraphError(f"conv weight {list(weight.shape)} does not fit {c} input channels "
                         f"in {groups} groups")
    out = None
    opg = o // groups
    for ky, kx, win in _windows(x, pads, (kh, kw), stride, dilation, 0.0):
        if groups == 1:
            # [O, C] x [N, C, oh, ow] -> [O, N, oh, ow]
            term = np.tensordot(weight[:, :, ky, kx], win, axes=([1], [1]))
        elif ipg == 1 and opg == 1:
            # Depthwise: each channel scaled by its own tap.
            term = (win * weight[:, 0, ky, kx][None, :, None, None]).transpose(1, 0, 2, 3)
        else:
            term = np.concatenate([
                np.tensordot(weight[g * opg:(g + 1) * opg, :, ky, kx],
                             win[:, g * ipg:(g + 1) * ipg], axes=([1], [1]))
                for g in range(groups)])
        out = term if out is None else out + term
    out = out.transpose(1, 0, 2, 3)
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out


def _activation(x, act):
    # Exactly the spellings docs/GRAPH_FORMAT.md allows, so that a typo fails here too.
    if act in (None, "none"):
        return x
    if act == "relu":
        return np.maximum(x, 0.0)
    if act == "relu6":
        return np.clip(x, 0.0, 6.0)
    raise GraphError(f"unknown activation {act!r}")


def _pool(x, op, kind):
    kernel = _pair(op["kernel"], "kernel")
    stride = _pair(op.get("stride", 1), "stride")
    pads = _pads(op, x.shape[2:], kernel, stride, (1, 1))
    if kind == "max":
        # Padded cells are -inf so that they never win.
        out = None
        for _, _, win in _windows(x, pads, kernel, stride, (1, 1), -np.inf):
            out = win.copy() if out is None else np.maximum(out, win)
        return out
    total = None
    for _, _, win in _windows(x, pads, kernel, stride, (1, 1), 0.0):
        total = win.copy() if total is None else total + win
    if op.get("count_include_pad", False):
        return total / (kernel[0] * kernel[1])
    count = None
    ones = np.ones((1, 1) + x.shape[2:], dtype=x.dtype)
    for _, _, win in _windows(ones, pads, kernel, stride, (1, 1), 0.0):
        count = win.copy() if count is None else count + win
    return total / count


class Graph:
    """A loaded graph: its JSON and its weights (float64 copies for the reference math)."""

    def __init__(self, model_dir=None, graph_path=None, weights_path=None):
        graph_path = graph_path or os.path.join(model_dir, "graph.json")
        weights_path = weights_path or os.path.join(model_dir, "weights.safetensors")
        with open(graph_path) as f:
            self.spec = json.load(f)
        tensors, self.metadata = safetensors_io.read(weights_path, to_float32=True)
        self.weights = {k: v.astype(np.float64) for k, v in tensors.items()}
        self.path = graph_path
        self._validate()

    @property
    def ops(self):
        return self.spec["ops"]

    @property
    def taps(self):
        return dict(self.spec.get("taps", {}))

    def _validate(self):
        for key in ("input", "output", "ops"):
            if key not in self.spec:
                raise GraphError(f"{self.path}: missing '{key}'")
        for i, op in enumerate(self.ops):
            kind = op.get("op")
            if kind not in _KNOWN_OPS:
                raise GraphError(f"{self.path}: op {i}: unknown op {kind!r}")
            for field in ("weight", "bias"):
                name = op.get(field)
                if name is not None and name not in self.weights:
                    raise GraphError(f"{self.path}: op {i}: tensor '{name}' not in weights")
            if kind in _CONV_OPS + ("FULLY_CONNECTED",) and "weight" not in op:
                raise GraphError(f"{self.path}: op {i}: {kind} without weight")
        for name, index in self.taps.items():
            if not isinstance(index, int) or not 0 <= index < len(self.ops):
                raise GraphError(f"{self.path}: tap '{name}' = {index!r} is not an op index")

    def _run_op(self, i, op, env):
        kind = op["op"]
        try:
            x = env[op["inputs"][0]]
        except KeyError:
            raise GraphError(f"{self.path}: op {i}: input '{op['inputs'][0]}' not computed "
                             f"yet") from None
        if kind in _CONV_OPS:
            w = self.weights[op["weight"]]
            b = self.weights[op["bias"]] if op.get("bias") else None
            groups = op.get("groups", 1)
            if kind == "DEPTHWISE_CONV_2D":
                groups = x.shape[1]
                if w.shape[1] != 1:
                    raise GraphError(f"{self.path}: op {i}: depthwise weight {list(w.shape)}")
            if b is not None and b.shape != (w.shape[0],):
                raise GraphError(f"{self.path}: op {i}: bias shape {list(b.shape)} for "
                                 f"{w.shape[0]} outputs")
            if "out_channels" in op and op["out_channels"] != w.shape[0]:
                raise GraphError(f"{self.path}: op {i}: out_channels {op['out_channels']} but "
                                 f"weight {list(w.shape)}")
            stride = _pair(op.get("stride", 1), "stride")
            dilation = _pair(op.get("dilation", 1), "dilation")
            pads = _pads(op, x.shape[2:], w.shape[2:], stride, dilation)
            y = conv2d(x, w, b, stride, pads, dilation, groups)
            return _activation(y, op.get("act"))
        if kind == "ADD":
            y = env[op["inputs"][1]]
            if x.shape != y.shape:
                raise GraphError(f"{self.path}: op {i}: ADD of {x.shape} and {y.shape}")
            return _activation(x + y, op.get("act"))
        if kind == "RELU":
            return np.maximum(x, 0.0)
        if kind == "RELU6":
            return np.clip(x, 0.0, 6.0)
        if kind == "MAX_POOL_2D":
            return _pool(x, op, "max")
        if kind == "AVERAGE_POOL_2D":
            if "kernel" not in op:
                return x.mean(axis=(2, 3), keepdims=True)
            return _pool(x, op, "avg")
        if kind == "FULLY_CONNECTED":
            w = self.weights[op["weight"]]
            flat = x.reshape(x.shape[0], -1)
            if w.ndim != 2 or w.shape[1] != flat.shape[1]:
                raise GraphError(f"{self.path}: op {i}: FC weight {list(w.shape)} for "
                                 f"{flat.shape[1]} inputs")
            y = flat @ w.T
            if op.get("bias"):
                y = y + self.weights[op["bias"]]
            return _activation(y, op.get("act"))
        if kind == "RESHAPE":
            return x.reshape(x.shape[0], -1)
        if kind == "SOFTMAX":
            e = np.exp(x - x.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        raise GraphError(f"{self.path}: op {i}: unhandled op {kind}")

    def run(self, x, taps=None, stop_at_deepest_tap=False):
        """Runs the graph on an NCHW batch. Returns (output or None, {tap: array}).

        `taps` is a list of op indices or tap names (default: all named taps). With
        stop_at_deepest_tap, execution ends at the deepest requested tap, as feature
        extraction does, and the output is None."""
        if taps is None:
            taps = list(self.taps)
        index_of = {}
        for t in taps:
            index_of[t] = self.taps[t] if isinstance(t, str) else int(t)
        env = {self.spec["input"]: np.asarray(x, dtype=np.float64)}
        last = max(index_of.values()) if (stop_at_deepest_tap and index_of) else len(self.ops) - 1
        by_index = {}
        for i, op in enumerate(self.ops[:last + 1]):
            env[op["output"]] = self._run_op(i, op, env)
            by_index[i] = env[op["output"]]
        tapped = {t: by_index[i] for t, i in index_of.items()}
        output = env.get(self.spec["output"]) if last == len(self.ops) - 1 else None
        return output, tapped


def load_image(path, size, mean, std):
    """Decodes to 8-bit RGB, resizes both sides to size x size with PIL's bilinear filter
    (antialiased when downscaling) and normalises on the 0..1 scale. Returns [1, 3, H, W]."""
    from PIL import Image  # only needed for images; the graph math is numpy alone

    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        u8 = np.asarray(im, dtype=np.float64)
    x = (u8 / 255.0 - np.asarray(mean)) / np.asarray(std)
    return x.transpose(2, 0, 1)[None]


def _pillow_version():
    import PIL

    return PIL.__version__


def tap_stats(array):
    return {"shape": list(array.shape), "mean": float(array.mean()), "std": float(array.std())}


def classify(graph, paths, size, mean, std, labels=None, taps=None):
    """Runs each image; returns one record per image: top-1/top-5 and the stats at each tap
    (keyed by op index, as ../shared/weights/mobilenet_v2_imagenet/expected.json does)."""
    if taps is None:
        taps = sorted(graph.taps.values())
    records = []
    for path in paths:
        out, tapped = graph.run(load_image(path, size, mean, std), taps)
        probs = out[0]
        if not np.isclose(probs.sum(), 1.0, atol=1e-6) or probs.min() < 0:
            probs = np.exp(probs - probs.max())
            probs = probs / probs.sum()
        top = [int(k) for k in np.argsort(-probs, kind="stable")[:5]]
        record = OrderedDict(image=os.path.basename(path), top1=top[0])
        if labels:
            record["label"] = labels[top[0]]
        record["prob"] = round(float(probs[top[0]]), 4)
        record["top5"] = top
        record["taps"] = OrderedDict()
        for t in taps:
            s = tap_stats(tapped[t])
            record["taps"][str(t)] = OrderedDict(shape=s["shape"], mean=round(s["mean"], 5),
                                                 std=round(s["std"], 5))
        records.append(record)
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--norm", choices=sorted(NORM_PRESETS),
                        help="normalisation preset (default: the graph's preprocess)")
    parser.add_argument("--size", type=int, help="resize to SIZE x SIZE (default: the graph's)")
    parser.add_argument("--labels", help="labels file (default: MODEL_DIR/labels.txt if present)")
    parser.add_argument("--taps", help="comma-separated op indices (default: the graph's taps)")
    parser.add_argument("--json", help="also write the results, in expected.json form, here")
    args = parser.parse_args(argv)

    graph = Graph(args.model_dir)
    pre = graph.spec.get("preprocess", {})
    if args.norm:
        mean, std = NORM_PRESETS[args.norm]
    elif "mean" in pre:
        mean, std = pre["mean"], pre["std"]
    else:
        parser.error("the graph has no preprocess; give --norm")
    size = args.size or pre.get("resize") or graph.spec.get("input_shape", [3, 224, 224])[1]
    labels_path = args.labels or os.path.join(args.model_dir, "labels.txt")
    labels = open(labels_path).read().splitlines() if os.path.exists(labels_path) else None
    taps = [int(t) for t in args.taps.split(",")] if args.taps else None
    records = classify(graph, args.images, size, mean, std, labels, taps)
    for r in records:
        print(f"{r['image']}: top-1 {r['top1']} ({r.get('label', '')}) p={r['prob']}  "
              f"top-5 {r['top5']}")
        for t, s in r["taps"].items():
            print(f"  op {t}: shape {s['shape']} mean {s['mean']} std {s['std']}")
    if args.json:
        doc = OrderedDict(
            graph="graph.json", weights="weights.safetensors",
            weights_sha256=graph.metadata.get("sha256", ""),
            source=graph.spec.get("source", ""),
            preprocessing=(f"decode to 8-bit RGB; resize to {size}x{size} with bilinear "
                           f"interpolation (PIL Image.BILINEAR, which antialiases when "
                           f"downscaling); x = (u8 / 255 - mean) / std with mean {mean} and std "
                           f"{std}; NCHW"),
            taps=graph.taps,
            taps_note="op indices (0-based position in graph.json 'ops') with their output "
                      "shape, mean and standard deviation on each image",
            produced_by=f"tools/convert/reference_runner.py (numpy {np.__version__}, float64; "
                        f"Pillow {_pillow_version()})",
            results=records)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
