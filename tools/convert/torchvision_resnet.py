"""Converts torchvision ResNet checkpoints (ResNet-18, Wide-ResNet-50-2) into mirad graphs.

The user fetches the .pth (models/<arch>.json lists the published torchvision URLs and their
sha256 prefixes); mirad never downloads. The graph follows torchvision's ResNet exactly:
  conv1 7x7 s2 pad 3 + BN + ReLU, max pool 3x3 s2 pad 1, layer1..layer4 of BasicBlocks
  (3x3, 3x3) or Bottlenecks (1x1, 3x3 carrying the stride, 1x1; torchvision's "v1.5"), a 1x1
  strided downsample conv + BN where the shape changes, ADD with ReLU, global average pool,
  fully connected 1000, softmax. Batch norm (eps 1e-5) is folded into each conv.
Taps: stride8 = end of layer2, stride16 = end of layer3.

  python3 tools/convert/torchvision_resnet.py resnet18 resnet18-f37072fd.pth [--out DIR]
  python3 tools/convert/torchvision_resnet.py wide_resnet50_2 wide_resnet50_2-95faca4d.pth
`auto` instead of an architecture infers the structure from the keys (used by the tests on
small random networks); it still requires torchvision's key names.
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import graph_builder as gb  # noqa: E402
import torch_checkpoint  # noqa: E402

ARCHITECTURES = ("resnet18", "wide_resnet50_2")
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which torchvision's ResNet uses
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
INPUT_SIZE = 224


def recipe_path(arch):
    return os.path.join(gb.MODELS_DIR, f"{arch}.json")


def load_recipe(arch):
    with open(recipe_path(arch)) as f:
        return json.load(f)


def expected_keys(block, layers, width_per_group=64, num_classes=1000):
    """torchvision's state-dict keys and shapes for a ResNet with these hyperparameters."""
    def bn(prefix, c):
        return [(f"{prefix}.{p}", [c]) for p in ("weight", "bias", "running_mean",
                                                 "running_var")] + \
               [(f"{prefix}.num_batches_tracked", [])]

    keys = [("conv1.weight", [64, 3, 7, 7])] + bn("bn1", 64)
    inplanes = 64
    expansion = 1 if block == "basic" else 4
    for li, (planes, repeats) in enumerate(zip((64, 128, 256, 512), layers)):
        for bi in range(repeats):
            p = f"layer{li + 1}.{bi}"
            stride = 2 if (li > 0 and bi == 0) else 1
            out = planes * expansion
            if block == "basic":
                keys += [(f"{p}.conv1.weight", [planes, inplanes, 3, 3])] + bn(f"{p}.bn1", planes)
                keys += [(f"{p}.conv2.weight", [planes, planes, 3, 3])] + bn(f"{p}.bn2", planes)
            else:
                width = int(planes * (width_per_group / 64.0))
                keys += [(f"{p}.conv1.weight", [width, inplanes, 1, 1])] + bn(f"{p}.bn1", width)
                keys += [(f"{p}.conv2.weight", [width, width, 3, 3])] + bn(f"{p}.bn2", width)
                keys += [(f"{p}.conv3.weight", [out, width, 1, 1])] + bn(f"{p}.bn3", out)
            if bi == 0 and (stride != 1 or inplanes != out):
                keys += [(f"{p}.downsample.0.weight", [out, inplanes, 1, 1])]
                keys += bn(f"{p}.downsample.1", out)
            inplanes = out
    keys += [("fc.weight", [num_classes, inplanes]), ("fc.bias", [num_classes])]
    return keys


def check_keys(state, expected, where):
    """Raises ConversionError listing missing, unexpected and mis-shaped tensors."""
    gb.check_state_dict(state, expected, where,
                        "a torchvision ResNet state dict of the expected architecture")


class _Keys:
    """Hands out state-dict tensors and remembers which were used, so that leftovers (a
    misspelt or foreign key) are reported instead of silently ignored."""

    def __init__(self, state, where):
        self.state = state
        self.where = where
        self.used = set()

    def __contains__(self, key):
        return key in self.state

    def __getitem__(self, key):
        if key not in self.state:
            raise gb.ConversionError(f"{self.where}: missing tensor '{key}'")
        self.used.add(key)
        return self.state[key]

    def leftovers(self):
        return [k for k in self.state if k not in self.used
                and not k.endswith("num_batches_tracked")]


def build_graph(state, name, where="<state dict>"):
    """The mirad graph (builder, output tensor, taps) for a torchvision-style ResNet."""
    keys = _Keys(state, where)
    b = gb.GraphBuilder(name, [3, INPUT_SIZE, INPUT_SIZE])
    channels = [3]

    def conv_bn(x, conv, bn, stride, act):
        w = keys[f"{conv}.weight"]
        if w.ndim != 4 or w.shape[1] != channels[0]:
            raise gb.ConversionError(f"{where}: '{conv}.weight' has shape {list(w.shape)}, "
                                     f"expected [*, {channels[0]}, kh, kw]")
        conv_bias = keys[f"{conv}.bias"] if f"{conv}.bias" in keys else None
        params = [keys[f"{bn}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")]
        if any(p.shape != (w.shape[0],) for p in params):
            raise gb.ConversionError(f"{where}: batch norm '{bn}' does not match '{conv}' "
                                     f"({w.shape[0]} channels)")
        wf, bf = gb.fold_batch_norm(w, conv_bias, *params, BN_EPS)
        # torchvision pads 3x3 convs by 1 and the 7x7 stem by 3: k // 2 on every side.
        p = w.shape[2] // 2
        channels[0] = w.shape[0]
        return b.conv(x, wf, bf, stride=stride, pads=[p, p, p, p], act=act)

    x = conv_bn(b.input, "conv1", "bn1", 2, "relu")
    x = b.max_pool(x, 3, 2, [1, 1, 1, 1])
    if "layer1.0.conv1.weight" not in keys:
        raise gb.ConversionError(f"{where}: no 'layer1.0.conv1.weight': not a torchvision "
                                 f"ResNet state dict")
    bottleneck = "layer1.0.conv3.weight" in keys
    layer_end = {}
    for li in range(1, 5):
        bi = 0
        while f"layer{li}.{bi}.conv1.weight" in keys:
            p = f"layer{li}.{bi}"
            stride = 2 if (li > 1 and bi == 0) else 1
            block_in, block_in_channels = x, channels[0]
            if bottleneck:
                h = conv_bn(x, f"{p}.conv1", f"{p}.bn1", 1, "relu")
                h = conv_bn(h, f"{p}.conv2", f"{p}.bn2", stride, "relu")
                h = conv_bn(h, f"{p}.conv3", f"{p}.bn3", 1, "none")
            else:
                h = conv_bn(x, f"{p}.conv1", f"{p}.bn1", stride, "relu")
                h = conv_bn(h, f"{p}.conv2", f"{p}.bn2", 1, "none")
            out_channels = channels[0]
            if f"{p}.downsample.0.weight" in keys:
                channels[0] = block_in_channels
                shortcut = conv_bn(block_in, f"{p}.downsample.0", f"{p}.downsample.1", stride,
                                   "none")
                if channels[0] != out_channels:
                    raise gb.ConversionError(f"{where}: {p}.downsample gives {channels[0]} "
                                             f"channels, the block {out_channels}")
            elif stride != 1 or block_in_channels != out_channels:
                raise gb.ConversionError(f"{where}: block {p} changes shape but has no "
                                         f"downsample")
            else:
                shortcut = block_in
            x = b.add(h, shortcut, act="relu")
            bi += 1
        if bi == 0:
            strays = [k for k in state if k.startswith(f"layer{li}.")]
            raise gb.ConversionError(f"{where}: missing tensor 'layer{li}.0.conv1.weight' (no "
                                     f"blocks in layer{li}; unexpected: {', '.join(strays[:8])})")
        layer_end[li] = b.last_op
    x = b.global_avg_pool(x)
    fc_w, fc_b = keys["fc.weight"], keys["fc.bias"]
    if fc_w.ndim != 2 or fc_w.shape[1] != channels[0] or fc_b.shape != (fc_w.shape[0],):
        raise gb.ConversionError(f"{where}: fc shapes {list(fc_w.shape)}/{list(fc_b.shape)} do "
                                 f"not fit {channels[0]} features")
    x = b.fully_connected(x, fc_w, fc_b)
    out = b.softmax(x)
    extra = keys.leftovers()
    if extra:
        raise gb.ConversionError(f"{where}: unexpected tensors (not torchvision ResNet key "
                                 f"names?): {', '.join(extra[:8])}")
    return b, out, OrderedDict(stride8=layer_end[2], stride16=layer_end[3])


def identify_weights(recipe, path, digest):
    """Names the published variant the file is, or None. A file carrying the name of a published
    torchvision file must match that file's sha256 prefix (torchvision's own check_hash rule);
    a mismatch means a damaged or partial download."""
    base = os.path.basename(path)
    for variant in recipe["weights"]:
        if base == variant["url"].rsplit("/", 1)[1] and not digest.startswith(
                variant["sha256_prefix"]):
            raise gb.ConversionError(f"{path}: sha256 {digest} does not start with "
                                     f"{variant['sha256_prefix']} as the published file does "
                                     f"(damaged or partial download?)")
    for variant in recipe["weights"]:
        if digest.startswith(variant["sha256_prefix"]):
            return variant["variant"]
    return None


def convert(arch, path, out_dir=None, name=None):
    """Converts and writes the model folder; returns (out_dir, graph dict, variant or None)."""
    with open(path, "rb") as f:
        data = f.read()
    digest = gb.sha256_bytes(data)
    state = torch_checkpoint.load_state_dict(data, name=path)
    variant = None
    if arch == "auto":
        name = name or "resnet"
    else:
        if arch not in ARCHITECTURES:
            raise gb.ConversionError(f"unknown architecture {arch!r} (known: "
                                     f"{', '.join(ARCHITECTURES)}, auto)")
        recipe = load_recipe(arch)
        check_keys(state, recipe["keys"].items(), path)
        variant = identify_weights(recipe, path, digest)
        name = name or arch
    builder, output, taps = build_graph(state, name, path)
    preprocess = OrderedDict(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=INPUT_SIZE,
                             crop=INPUT_SIZE)
    described = f"torchvision {arch} {variant}" if variant else f"{arch} (not a published file)"
    source = (f"{described}: {os.path.basename(path)} (sha256 {digest}); BN folded (eps {BN_EPS}); "
              f"OIHW; explicit pads as torchvision; input ImageNet mean/std on 0..1, RGB")
    graph = builder.graph(output, source, preprocess, taps)
    metadata = {"source": f"{described}: {os.path.basename(path)}", "sha256": digest,
                "converter": f"tools/convert/torchvision_resnet.py v{gb.CONVERTER_VERSION}"}
    out_dir = out_dir or gb.default_output_dir(name)
    # ImageNet class names only fit a 1000-way classifier (the tests use smaller heads).
    labels = gb.IMAGENET_LABELS if state["fc.weight"].shape[0] == 1000 else None
    gb.write_model_dir(out_dir, graph, builder.weights, metadata, labels)
    return out_dir, graph, variant


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", choices=ARCHITECTURES + ("auto",))
    parser.add_argument("checkpoint", help="the torchvision .pth you downloaded")
    parser.add_argument("--out", help="output folder (default: "
                                      f"{gb.default_output_dir('<arch>')})")
    args = parser.parse_args(argv)
    try:
        out_dir, graph, variant = convert(args.arch, args.checkpoint, args.out)
    except (gb.ConversionError, torch_checkpoint.CheckpointError, OSError) as e:
        sys.exit(f"error: {e}")
    if args.arch != "auto" and variant is None:
        print(f"note: {args.checkpoint} is not one of the torchvision files listed in "
              f"models/{args.arch}.json; converted anyway", file=sys.stderr)
    print(f"wrote {out_dir} ({len(graph['ops'])} ops, taps {dict(graph['taps'])}"
          f"{', ' + variant if variant else ''})")


if __name__ == "__main__":
    main()
