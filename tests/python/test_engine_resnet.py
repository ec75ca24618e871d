#!/usr/bin/env python3
"""The C++ engine against the independent numpy reference on a ResNet: a random tiny ResNet
(basic and bottleneck blocks) written as a torch checkpoint in the test, converted by
tools/convert/torchvision_resnet.py, run by `mirad embed --no-smooth` and by
tools/convert/reference_runner.py on the same images; the stride-8 and stride-16 taps must
agree to float32 precision. Usage: test_engine_resnet.py PATH/TO/mirad
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_converters as tc  # noqa: E402  (checkpoint writer and tiny ResNet builder)

reference_runner, safetensors_io, torchvision_resnet = (tc.reference_runner, tc.safetensors_io,
                                                        tc.torchvision_resnet)
MIRAD = None


class EngineMatchesReference(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mirad_engine_resnet_")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _check(self, block, seed):
        from PIL import Image

        rng = np.random.default_rng(seed)
        state = tc.tiny_resnet_state(rng, block)
        ckpt = os.path.join(self.tmp, "model.pth")
        tc.write_zip_checkpoint(ckpt, state)
        model = os.path.join(self.tmp, "model")
        torchvision_resnet.convert("auto", ckpt, model, name=f"tiny_{block}")
        # 64x64 images need no resize, so both sides see identical pixels.
        images = []
        for i in range(3):
            path = os.path.join(self.tmp, f"img{i}.png")
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
            images.append(path)
        out = os.path.join(self.tmp, "feats.safetensors")
        subprocess.run([MIRAD, "embed", *images, "--backbone", model, "--taps",
                        "stride8,stride16", "--no-smooth", "--size", "64", "--batch", "2",
                        "--out", out, "--json"], check=True, stdout=subprocess.DEVNULL)
        feats, meta = safetensors_io.read(out)
        graph = reference_runner.Graph(model)
        pre = graph.spec["preprocess"]
        for i, path in enumerate(images):
            x = reference_runner.load_image(path, 64, pre["mean"], pre["std"])
            _, taps = graph.run(x, taps=["stride8", "stride16"])
            for name in ("stride8", "stride16"):
                got, want = feats[name][i], taps[name][0]
                self.assertEqual(got.shape, want.shape, name)
                err = np.linalg.norm(got - want) / np.linalg.norm(want)
                self.assertLess(err, 1e-5, f"{block} image {i} tap {name}: rel. error {err:.3g}")

    def test_basic_blocks(self):
        self._check("basic", 11)

    def test_bottleneck_blocks(self):
        self._check("bottleneck", 12)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: test_engine_resnet.py PATH/TO/mirad")
    MIRAD = sys.argv.pop(1)
    unittest.main(verbosity=2)
