#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora into tests/fuzz/corpus/<reader>/: a few valid and a few
near-valid inputs per reader. The committed corpus is this script's output; rerun it after a
format changes:  tests/fuzz/make_corpus.py build-fuzz/tests/fuzz/make_fuzz_seeds
(the program, built by tools/fuzz.sh, writes the manifest, model and checkpoint seeds with
mirad's own writers). Needs numpy-free Python 3 with PIL (python3-pil) for the JPEGs."""
import io
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
SEP = b"\0PART\0"  # fuzz_util.h: kPartSeparator
DEEP = 65000  # the nesting that overflowed the stack (issue 7, bug 3)


def edit(text, old, new):
    """`text` with `old` replaced; a near-valid seed must differ from the valid one."""
    if isinstance(text, bytes):
        old, new = old.encode(), new.encode()
    assert old in text, old
    return text.replace(old, new)


def put(reader, name, data):
    d = CORPUS / reader
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# ----------------------------------------------------------------------------------- PNG
def chunk(kind, body):
    return (struct.pack(">I", len(body)) + kind + body +
            struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def png(width, height, color_type, depth, rows, interlace=0, extra=b"", plte=None):
    """rows(x_list, y) -> bytes of one filtered-free scanline for those columns."""
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, interlace)
    raw = b""
    if interlace:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                  (1, 0, 2, 2), (0, 1, 1, 2)]
        for x0, y0, dx, dy in passes:
            xs = list(range(x0, width, dx))
            if not xs:
                continue
            for y in range(y0, height, dy):
                raw += b"\0" + rows(xs, y)
    else:
        for y in range(height):
            raw += b"\0" + rows(list(range(width)), y)
    body = chunk(b"IHDR", ihdr)
    if plte:
        body += chunk(b"PLTE", plte)
    body += extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return sig + body


def pack_bits(values, depth):
    out, acc, n = bytearray(), 0, 0
    for v in values:
        acc = (acc << depth) | v
        n += depth
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def make_png():
    w, h = 5, 4
    put("png", "gray8.png", png(w, h, 0, 8, lambda xs, y: bytes((x * 40 + y * 9) % 256 for x in xs)))
    put("png", "rgb8.png", png(w, h, 2, 8, lambda xs, y: bytes(v for x in xs for v in (x * 50, y * 60, 7))))
    put("png", "rgba8.png", png(w, h, 6, 8, lambda xs, y: bytes(v for x in xs for v in (x, y, 9, 128))))
    put("png", "gray_alpha8.png", png(w, h, 4, 8, lambda xs, y: bytes(v for x in xs for v in (x * 30, 200))))
    put("png", "gray16.png", png(w, h, 0, 16, lambda xs, y: b"".join(struct.pack(">H", x * 9000 + y) for x in xs)))
    put("png", "rgb16.png", png(w, h, 2, 16, lambda xs, y: b"".join(struct.pack(">HHH", x * 9000, y * 7000, 65535) for x in xs)))
    put("png", "gray1.png", png(9, 3, 0, 1, lambda xs, y: pack_bits([(x + y) & 1 for x in xs], 1)))
    put("png", "palette4_trns.png",
        png(w, h, 3, 4, lambda xs, y: pack_bits([(x + y) % 3 for x in xs], 4),
            plte=bytes([255, 0, 0, 0, 255, 0, 0, 0, 255]), extra=chunk(b"tRNS", b"\x80")))
    put("png", "interlaced_rgb8.png",
        png(11, 9, 2, 8, lambda xs, y: bytes(v for x in xs for v in (x * 20, y * 25, 3)), interlace=1))
    put("png", "text_gamma.png",
        png(w, h, 0, 8, lambda xs, y: bytes(xs), extra=chunk(b"gAMA", struct.pack(">I", 45455)) +
            chunk(b"tEXt", b"Comment\0fuzz seed")))
    good = png(w, h, 2, 8, lambda xs, y: bytes(v for x in xs for v in (x, y, 1)))
    put("png", "near_truncated.png", good[:len(good) - 20])
    put("png", "near_no_iend.png", good[:-12])
    put("png", "near_zero_width.png", png(0, 4, 0, 8, lambda xs, y: b""))
    # Header says 100000 x 100000 (above the pixel limit): refused before any allocation.
    put("png", "near_bomb.png", png(100000, 100000, 0, 8, lambda xs, y: b"")[:60])
    put("png", "near_bad_color_type.png", png(w, h, 5, 8, lambda xs, y: bytes(len(xs))))


# ---------------------------------------------------------------------------------- JPEG
def jpeg(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def make_jpeg():
    rgb = Image.new("RGB", (13, 7))
    rgb.putdata([((x * 19) % 256, (y * 37) % 256, 90) for y in range(7) for x in range(13)])
    put("jpeg", "baseline_420.jpg", jpeg(rgb, quality=85))
    put("jpeg", "baseline_444.jpg", jpeg(rgb, quality=95, subsampling=0))
    put("jpeg", "progressive.jpg", jpeg(rgb, quality=75, progressive=True))
    put("jpeg", "optimized_422.jpg", jpeg(rgb, quality=60, optimize=True, subsampling=1))
    put("jpeg", "gray.jpg", jpeg(rgb.convert("L"), quality=80))
    put("jpeg", "cmyk.jpg", jpeg(rgb.convert("CMYK"), quality=80))
    good = jpeg(rgb, quality=85)
    put("jpeg", "near_truncated.jpg", good[: len(good) // 2])
    put("jpeg", "near_soi_only.jpg", b"\xff\xd8\xff\xd9")
    sof = good.find(b"\xff\xc0")
    put("jpeg", "near_zero_height.jpg", good[: sof + 5] + b"\0\0" + good[sof + 7:])


# --------------------------------------------------------------------------- safetensors
def safetensors(entries, data, metadata=None, pad=True):
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def st_raw(header_text, data=b""):
    return struct.pack("<Q", len(header_text)) + header_text + data


def make_safetensors():
    f32 = struct.pack("<6f", 1, -2, 0.5, float("inf"), -0.0, 3)
    put("safetensors", "f32_2x3.safetensors",
        safetensors({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}, f32,
                    {"format": "pt"}))
    put("safetensors", "mixed_dtypes.safetensors", safetensors({
        "a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
        "b": {"dtype": "BF16", "shape": [2], "data_offsets": [4, 8]},
        "c": {"dtype": "F64", "shape": [], "data_offsets": [8, 16]},
        "d": {"dtype": "F32", "shape": [0, 5], "data_offsets": [16, 16]},
    }, b"\x00\x3c\x00\xc0" + b"\x80\x3f\x00\xc0" + struct.pack("<d", 2.5)))
    put("safetensors", "empty.safetensors", safetensors({}, b""))
    e = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    put("safetensors", "near_overlap.safetensors",
        safetensors({"a": e, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)))
    put("safetensors", "near_hole.safetensors",
        safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)))
    put("safetensors", "near_trailing.safetensors", safetensors({"a": e}, bytes(12)))
    put("safetensors", "near_dtype_i64.safetensors",
        safetensors({"a": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8)))
    put("safetensors", "near_header_too_long.safetensors", struct.pack("<Q", 1 << 40) + b"{}")
    put("safetensors", "near_duplicate_name.safetensors",
        st_raw(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
               b'"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)))
    # Issue 7, bug 3: 65,000 levels of '[' in a shape overflowed the stack.
    put("safetensors", "near_deep_shape.safetensors",
        st_raw(b'{"a":{"dtype":"F32","shape":' + b"[" * DEEP + b"]" * DEEP +
               b',"data_offsets":[0,0]}}'))


# --------------------------------------------------------------------------------- graph
def make_graph():
    # conv 3->4 (3x3, SAME, relu6) -> depthwise 3x3 stride 2 -> add? no: pool -> reshape -> FC
    g = {"format": "mirad-graph", "version": 1, "name": "tiny", "input": "x", "output": "y",
         "input_shape": [3, 8, 8], "taps": {"stride1": 0, "stride2": 1},
         "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize": 8, "crop": 8},
         "ops": [
             {"op": "CONV_2D", "inputs": ["x"], "output": "c1", "weight": "c1.w", "bias": "c1.b",
              "stride": 1, "padding": "SAME", "act": "relu6"},
             {"op": "DEPTHWISE_CONV_2D", "inputs": ["c1"], "output": "d1", "weight": "d1.w",
              "stride": [2, 2], "pads": [1, 1, 1, 1], "dilation": 1},
             {"op": "ADD", "inputs": ["d1", "d1"], "output": "a1", "act": "relu"},
             {"op": "MAX_POOL_2D", "inputs": ["a1"], "output": "p1", "kernel": 2, "stride": 2,
              "padding": "VALID"},
             {"op": "AVERAGE_POOL_2D", "inputs": ["p1"], "output": "g1"},
             {"op": "RESHAPE", "inputs": ["g1", "shape"], "output": "r1"},
             {"op": "FULLY_CONNECTED", "inputs": ["r1"], "output": "f1", "weight": "fc.w",
              "bias": "fc.b"},
             {"op": "SOFTMAX", "inputs": ["f1"], "output": "y"},
         ]}
    shapes = {"c1.w": [4, 3, 3, 3], "c1.b": [4], "d1.w": [4, 1, 3, 3], "fc.w": [2, 4], "fc.b": [2]}
    entries, data = {}, b""
    for name, shape in shapes.items():
        n = 1
        for s in shape:
            n *= s
        entries[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + 4 * n]}
        data += struct.pack("<%df" % n, *[((i * 7) % 11 - 5) / 10 for i in range(n)])
    weights = safetensors(entries, data)
    text = json.dumps(g, indent=1)
    put("graph", "tiny.json", text)
    put("graph", "tiny_with_weights", text.encode() + SEP + weights)
    g2 = dict(g, ops=g["ops"][:1], output="c1")
    del g2["input_shape"], g2["taps"]
    put("graph", "one_conv_with_weights", json.dumps(g2).encode() + SEP + weights)
    put("graph", "near_unknown_op.json", edit(text, "SOFTMAX", "SOFTMAX2"))
    put("graph", "near_use_before_define.json", edit(text, '"inputs": [\n    "c1"\n   ]', '"inputs": ["y"]'))
    put("graph", "near_huge_stride.json", edit(text, '"stride": 1,', '"stride": 1099511627776,'))
    put("graph", "near_huge_pads_with_weights",
        edit(text, '"pads": [\n    1,\n    1,\n    1,\n    1\n   ]', '"pads": [100000, 100000, 1, 1]').encode()
        + SEP + weights)
    put("graph", "near_wrong_weight_shape",
        text.encode() + SEP + safetensors({"c1.w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)))
    # Issue 7, bug 3: deep nesting in input_shape (error messages dumped it recursively).
    put("graph", "near_deep_input_shape.json",
        '{"input":"x","output":"y","input_shape":' + "[" * DEEP + "]" * DEEP + ',"ops":[]}')


# -------------------------------------------------------------------------------- config
def make_config(model_config):
    put("config", "empty.json", "{}")
    put("config", "defaults.json", json.dumps(model_config, indent=2))
    put("config", "plain_cross_fit.json", json.dumps(
        {"train": {"mode": "plain", "budget": 40, "positions": 0},
         "refine": {"scoring": "cross_fit", "folds": 3, "rule": "mad", "soft": True},
         "threshold": {"rule": "fpr", "target_fpr": 0.1}, "seed": 18446744073709551615}))
    put("config", "near_unknown_key.json", '{"trian": {}}')
    put("config", "near_nan.json", '{"threshold": {"k": NaN}}')
    put("config", "near_negative_seed.json", '{"seed": -1}')
    put("config", "near_duplicate_key.json", '{"seed": 1, "seed": 2}')
    put("config", "near_deep.json", '{"train":' + "[" * 2000 + "]" * 2000 + "}")


# --------------------------------------------------------------------------- list / tree
def make_dataset():
    # fuzz_dataset_list's folder holds a.png b.png sub/c.png small.png mask.png zero.png
    # bad.png empty.png.
    put("dataset_list", "train_only.txt", "# training images\na.png\nb.png,good\n\nsub/c.png\n")
    put("dataset_list", "train_and_test",
        b"a.png\nb.png\n" + SEP + b"sub/c.png,good\nb.png,defect,crack,mask.png\n")
    put("dataset_list", "labels.txt", "a.png,ok\nb.png,NG,scratch\nsub/c.png,anomaly,,zero.png\n")
    put("dataset_list", "near_duplicate.txt", "a.png\n./a.png\n")
    put("dataset_list", "near_missing.txt", "a.png\nnope.png\n")
    put("dataset_list", "near_mask_size.txt", "a.png,defect,crack,small.png\n")
    put("dataset_list", "near_bad_image.txt", "bad.png\nempty.png\n")
    put("dataset_list", "near_five_fields.txt", "a.png,good,good,mask.png,extra\n")
    # fuzz_dataset_tree: first line the layout, then "<kind> <path>" (p s m z j g e d l).
    put("dataset_tree", "mvtec.txt", "mvtec\n" + "\n".join([
        "p train/good/000.png", "p train/good/001.png", "j train/good/002.jpg",
        "p test/good/000.png", "p test/crack/000.png", "p test/crack/001.png",
        "m ground_truth/crack/000_mask.png", "m ground_truth/crack/001_mask.png"]) + "\n")
    put("dataset_tree", "ksdd2.txt", "ksdd2\n" + "\n".join([
        "p train/10.png", "z train/10_GT.png", "p train/11.PNG", "m train/11_GT.png",
        "p test/20.png", "m test/20_GT.png", "p test/21.png", "z test/21_GT.png"]) + "\n")
    put("dataset_tree", "folder.txt", "folder\n" + "\n".join([
        "p good/a.png", "p good/b.png", "j good/c.jpeg", "p scratch/d.png",
        "m ground_truth/scratch/d_mask.png"]) + "\n")
    put("dataset_tree", "folder_splits.txt", "folder\n" + "\n".join([
        "p train/good/a.png", "p test/good/b.png", "p test/dent/c.png"]) + "\n")
    put("dataset_tree", "near_mvtec_missing_mask.txt", "mvtec\n" + "\n".join([
        "p train/good/000.png", "p test/crack/000.png", "p test/crack/001.png",
        "m ground_truth/crack/000_mask.png"]) + "\n")
    put("dataset_tree", "near_ksdd2_unpaired.txt", "ksdd2\n" + "\n".join([
        "p train/10.png", "z train/10_GT.png", "p train/12.png", "m train/13_GT.png"]) + "\n")
    put("dataset_tree", "near_symlink_loop.txt", "mvtec\n" + "\n".join([
        "p train/good/000.png", "l train/good/001.png 001.png", "p test/good/000.png",
        "l test/crack crack"]) + "\n")
    put("dataset_tree", "near_mask_size.txt", "mvtec\n" + "\n".join([
        "p train/good/000.png", "p test/crack/000.png", "s ground_truth/crack/000_mask.png"]) + "\n")
    put("dataset_tree", "near_garbage_image.txt", "folder\n" + "\n".join([
        "g good/a.png", "e good/b.png", "p good/c.png"]) + "\n")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py <path to make_fuzz_seeds>")
    for d in ("png", "jpeg", "safetensors", "graph", "config", "dataset_list", "dataset_tree",
              "manifest", "model", "checkpoint"):
        shutil.rmtree(CORPUS / d, ignore_errors=True)
    make_png()
    make_jpeg()
    make_safetensors()
    make_graph()
    make_dataset()
    subprocess.run([sys.argv[1], str(CORPUS)], check=True)
    model = (CORPUS / "model" / "config.json").read_text()
    make_config(json.loads(model)["config"])


if __name__ == "__main__":
    main()
