"""Shared pieces of the weight converters: graph building, batch-norm folding, output folders."""

import hashlib
import json
import os
from collections import OrderedDict

import numpy as np

import safetensors_io

# Bumped whenever a converter's output changes for the same input; recorded in each
# weights.safetensors so a cached conversion can be told apart from a newer one.
CONVERTER_VERSION = "1"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS_DIR = os.path.join(REPO_ROOT, "models")
IMAGENET_LABELS = os.path.join(MODELS_DIR, "imagenet_labels_1000.txt")


class ConversionError(ValueError):
    """An input that a converter cannot turn into a graph (wrong keys, shapes, checksums)."""


def check_state_dict(state, expected, where, what="the expected state dict"):
    """Raises ConversionError listing missing, unexpected and mis-shaped tensors of `state`
    against `expected` ((name, shape) pairs); BN's num_batches_tracked may be absent."""
    want = OrderedDict((k, list(s)) for k, s in expected)
    missing = [k for k in want if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in want]
    misshaped = [f"{k}: {list(state[k].shape)}, expected {want[k]}"
                 for k in want if k in state and list(state[k].shape) != want[k]]
    if missing or unexpected or misshaped:
        lines = []
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", misshaped)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                lines.append(f"  {title}: {', '.join(items[:8])}{more}")
        raise ConversionError(f"{where}: not {what}:\n" + "\n".join(lines))


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_output_dir(name):
    """${XDG_CACHE_HOME:-~/.cache}/mirad/models/<name>: converted weights never go in the repo."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "mirad", "models", name)


def check_output_dir(path):
    """Refuses a destination inside the repository, where weights must never land."""
    real = os.path.realpath(path)
    repo = os.path.realpath(REPO_ROOT)
    inside = real == repo or real.startswith(repo + os.sep)
    if inside and os.path.exists(os.path.join(repo, ".git")):
        raise ConversionError(f"output folder {path} is inside the repository {repo}; converted "
                              f"weights belong in a cache folder (default "
                              f"{default_output_dir('<name>')})")
    return path


def fold_batch_norm(weight, bias, gamma, beta, mean, var, eps):
    """Folds y = gamma * (conv(x) + bias - mean) / sqrt(var + eps) + beta into one conv.

    Done in float64 and rounded once, so the folded float32 weights are as close to the
    original two-step computation as float32 allows."""
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    b0 = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
    b = (b0 - mean.astype(np.float64)) * scale + beta.astype(np.float64)
    return w.astype(np.float32), b.astype(np.float32)


def same_pads(in_size, kernel, stride, dilation=1):
    """TensorFlow SAME padding for one axis: (before, after)."""
    k_eff = (kernel - 1) * dilation + 1
    out = -(-in_size // stride)
    total = max((out - 1) * stride + k_eff - in_size, 0)
    return total // 2, total - total // 2


class GraphBuilder:
    """Accumulates ops (in execution order) and their weights; names tensors t0, t1, ..."""

    def __init__(self, name, input_shape):
        self.name = name
        self.input_shape = list(input_shape)
        self.ops = []
        self.weights = OrderedDict()
        self._next = 0
        self.input = self._new_tensor()

    def _new_tensor(self):
        name = f"t{self._next}"
        self._next += 1
        return name

    def _add(self, op, inputs, **fields):
        entry = OrderedDict(op=op, inputs=list(inputs), output=self._new_tensor())
        entry.update(fields)
        self.ops.append(entry)
        return entry["output"]

    @property
    def last_op(self):
        return len(self.ops) - 1

    def conv(self, x, weight, bias, stride=1, pads=(0, 0, 0, 0), act="none", depthwise=False):
        """A CONV_2D (or DEPTHWISE_CONV_2D) with explicit pads [top, bottom, left, right]."""
        index = len(self.ops)
        wname, bname = f"op{index}.weight", f"op{index}.bias"
        self.weights[wname] = np.ascontiguousarray(weight, dtype=np.float32)
        self.weights[bname] = np.ascontiguousarray(bias, dtype=np.float32)
        out_channels = int(weight.shape[0])
        return self._add("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x],
                         stride=stride, pads=[int(p) for p in pads], act=act,
                         groups=out_channels if depthwise else 1,
                         weight=wname, bias=bname, out_channels=out_channels)

    def add(self, a, b, act="none"):
        return self._add("ADD", [a, b], act=act)

    def max_pool(self, x, kernel, stride, pads):
        return self._add("MAX_POOL_2D", [x], kernel=kernel, stride=stride,
                         pads=[int(p) for p in pads])

    def global_avg_pool(self, x):
        return self._add("AVERAGE_POOL_2D", [x])

    def fully_connected(self, x, weight, bias):
        index = len(self.ops)
        wname, bname = f"op{index}.weight", f"op{index}.bias"
        self.weights[wname] = np.ascontiguousarray(weight, dtype=np.float32)
        self.weights[bname] = np.ascontiguousarray(bias, dtype=np.float32)
        return self._add("FULLY_CONNECTED", [x], weight=wname, bias=bname,
                         out_channels=int(weight.shape[0]))

    def softmax(self, x):
        return self._add("SOFTMAX", [x])

    def graph(self, output, source, preprocess, taps):
        return OrderedDict([
            ("format", "mirad-graph"), ("version", 1), ("name", self.name),
            ("source", source), ("input", self.input), ("output", output),
            ("input_shape", self.input_shape), ("preprocess", preprocess),
            ("taps", taps), ("ops", self.ops),
        ])


def write_model_dir(out_dir, graph, weights, metadata, labels_path=None, extra_files=()):
    """Writes graph.json, weights.safetensors (and labels.txt and extra files) into out_dir.

    Each file is written to a temporary name and renamed, so an interrupted conversion never
    leaves a graph that points at missing or half-written weights."""
    check_output_dir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    safetensors_io.write(os.path.join(out_dir, "weights.safetensors"), weights, metadata)
    files = [("graph.json", json.dumps(graph, indent=1) + "\n")]
    if labels_path:
        with open(labels_path) as f:
            files.append(("labels.txt", f.read()))
    for name, src in extra_files:
        with open(src) as f:
            files.append((name, f.read()))
    for name, text in files:
        safetensors_io.write_bytes_atomic(os.path.join(out_dir, name), text.encode("utf-8"))
    return out_dir
