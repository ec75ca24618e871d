#!/usr/bin/env python3
"""The product end to end through the `mirad` CLI, on generated data (procedural textures, so
it runs offline): the demo's refinement at 20% contamination for three seeds, the clean /
train / embed / predict / eval / info commands and their outputs, scoring independent of the
batch, inputs never modified, and bad input. Needs the default backbone (tools/setup.sh
converts it); exits 77 (skipped) without it.
Usage: test_end_to_end.py MIRAD [--only NAME]
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

MIRAD = sys.argv[1]
FAST = ["--set", "train.budget=48", "--set", "refine.folds=3"]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


# Inputs no command may change (issue 7: the dataset tree, the backbone folder, the manifest,
# the model and the feature file), hashed before and after every `mirad` call once registered.
WATCHED = []
guarded_calls = 0


def watch(path):
    WATCHED.append(path)


def snapshot():
    return {p: tree_hash(p) for p in WATCHED if os.path.exists(p)}


def mirad(*args, ok=True):
    global guarded_calls
    before = snapshot()
    p = subprocess.run([MIRAD, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    after = snapshot()
    guarded_calls += 1
    for path, h in before.items():
        if after.get(path) != h:
            check(False, f"mirad {' '.join(map(str, args))[:100]} changed its input {path}")
    if ok and p.returncode != 0:
        raise RuntimeError(f"mirad {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr}")
    return p


def tree_hash(root):
    """Names, bytes and modification times of a folder's files (or of one file)."""
    h = hashlib.sha256()
    if os.path.isfile(root):
        h.update(open(root, "rb").read())
        h.update(str(os.stat(root).st_mtime_ns).encode())
        return h.hexdigest()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(p.encode())
            h.update(open(p, "rb").read())
            h.update(str(os.stat(p).st_mtime_ns).encode())
    return h.hexdigest()


def demo_refinement():
    """At 20% contamination refinement rejects most contaminants and the refined detector
    beats the one trained on everything, for each of three seeds."""
    for seed in (0, 1, 2):
        d = json.loads(mirad("demo", "--procedural", "--contamination", 0.2, "--train", 50,
                             "--size", 128, "--seed", seed, "--json").stdout)
        n_bad, hit, n_rej = d["contaminated"], d["rejected_truly_defective"], len(d["rejected"])
        before, after = d["before"]["image_auroc"], d["after"]["image_auroc"]
        print(f"seed {seed}: {hit}/{n_bad} contaminants rejected, {n_rej - hit} good images "
              f"rejected; image AUROC {before:.4f} -> {after:.4f}; {d['seconds']:.0f} s")
        for r in d["rounds"]:
            good_above = sorted((s for s, bad in r["scores"] if not bad and s is not None), reverse=True)
            bad_scores = sorted((s for s, bad in r["scores"] if bad and s is not None), reverse=True)
            print(f"  round {r['round']}: tau {r['tau']:.2f}, rejected {r['rejected']} "
                  f"({r['rejected_truly_defective']} defective); top good {[round(x, 2) for x in good_above[:4]]}, "
                  f"defective left {[round(x, 2) for x in bad_scores[:6]]}")
        check(hit >= 0.6 * n_bad, f"seed {seed}: most contaminants rejected ({hit}/{n_bad})")
        # A real weakness, kept in view rather than fixed here: over five rounds the IQR rule
        # peels good images off the heavy upper tail of the out-of-fold scores (after round 1
        # the rounds often reject only good images; the per-round lines above show it).
        # Measured on seeds 0-2: 15/12/13 of 50 natively (AVX-512), 16/6/17 on the haswell path
        # (OpenBLAS Haswell + oneDNN AVX2, what a Zen 3 runs). The bound, 20 of 50, is the worst
        # measured plus 3: it keeps the weakness from growing, it does not call it fine. The
        # skew-adjusted rule (refine.rule=adjusted) rejected 0-5 of 50 on the same seeds, at
        # 19 of 30 contaminants instead of 26 and a lower AUROC after, so it is not the default.
        check(n_rej - hit <= 0.4 * 50, f"seed {seed}: few good images rejected ({n_rej - hit})")
        # Measured +0.05 to +0.20 on seeds 0-2; refinement must really help, not merely not hurt.
        check(after >= before + 0.02, f"seed {seed}: refinement gains image AUROC ({before:.4f} -> {after:.4f})")


def product(tmp):
    data = os.path.join(tmp, "synth")
    mirad("synth", "--out", data, "--categories", "wood", "--procedural", "--train", 24,
          "--test-good", 6, "--test-defect", 2, "--size", 128, "--seed", 3)
    cat = os.path.join(data, "wood")
    manifest = os.path.join(tmp, "r20.json")
    mirad("contaminate", cat, "--ratio", 0.2, "--seed", 1, "--manifest", manifest)
    before = tree_hash(cat)
    watch(cat), watch(manifest)

    # clean: outputs, evidence, export; the dataset is untouched.
    out = os.path.join(tmp, "cleaned")
    kept = os.path.join(tmp, "kept")
    c = json.loads(mirad("clean", "--data", cat, "--contamination", manifest, "--out", out,
                         "--export", kept, "--json", *FAST).stdout)
    check(os.path.exists(os.path.join(out, "clean.json")) and
          os.path.exists(os.path.join(out, "rejected.csv")), "clean writes clean.json and rejected.csv")
    rows = open(os.path.join(out, "rejected.csv")).read().splitlines()
    check(rows[0] == "path,score,round,threshold" and len(rows) == 1 + len(c["rejected"]),
          "rejected.csv lists every rejected image")
    heat = [r for r in c["rejected"] if "heatmap" in r]
    check(len(heat) == len(c["rejected"]) and all(os.path.exists(os.path.join(out, r["heatmap"])) for r in heat),
          "every rejected image has a heatmap")
    n_kept = sum(len(f) for _, _, f in os.walk(kept))
    check(n_kept == c["retained"], f"--export copies the kept images ({n_kept} of {c['retained']})")
    check(c["cleaning"]["contaminated"] == 4, "the manifest's 4 contaminants are known to clean")
    check(tree_hash(cat) == before, "clean leaves the dataset untouched")
    model = os.path.join(out, "model")
    watch(model)
    info = json.loads(mirad("info", model, "--json").stdout)
    check(info["backbone_sha256"] and len(info["taps"]) == 2, "info reads the model")

    # A saved feature file gives the same model as computing the features.
    feats = os.path.join(tmp, "feats.safetensors")
    mirad("embed", os.path.join(cat, "train"), os.path.join(cat, "test"), "--out", feats)
    watch(feats)
    m1, m2 = os.path.join(tmp, "m1"), os.path.join(tmp, "m2")
    mirad("train", "--data", cat, "--contamination", manifest, "--out", m1, *FAST)
    watch(m1)
    # features.precision asks for FP16 on CUDA; the CPU computes FP32, which is what the features
    # file holds and what the model must record.
    mirad("train", "--data", cat, "--contamination", manifest, "--features", feats, "--out", m2,
          "--set", "features.precision=fp16", *FAST)
    m2_cfg = json.load(open(os.path.join(m2, "config.json")))
    check(m2_cfg["config"]["features"]["precision"] == "fp32",
          "a model trained on the CPU records the FP32 features it was trained on")
    f1 = open(os.path.join(m1, "flow.safetensors"), "rb").read()
    f2 = open(os.path.join(m2, "flow.safetensors"), "rb").read()
    check(f1 == f2, "train with --features gives the identical model")
    # --threads never changes training: every training job runs single-threaded BLAS (the
    # worker count only decides how many run side by side), so from one feature file 1 and 2
    # threads give the identical model by construction. (The features themselves come from
    # oneDNN with the thread budget, which promises bit-identity only for a fixed count.)
    m_t1, m_t2 = os.path.join(tmp, "mt1"), os.path.join(tmp, "mt2")
    for out_dir, threads in ((m_t1, 1), (m_t2, 2)):
        mirad("train", "--data", cat, "--contamination", manifest, "--features", feats,
              "--out", out_dir, "--threads", threads, *FAST)
    def without_timings(j):  # the wall-clock fields are the only ones allowed to differ
        if isinstance(j, dict):
            return {k: without_timings(v) for k, v in j.items() if not k.endswith("seconds")}
        return [without_timings(v) for v in j] if isinstance(j, list) else j
    same_flow = (open(os.path.join(m_t1, "flow.safetensors"), "rb").read() ==
                 open(os.path.join(m_t2, "flow.safetensors"), "rb").read())
    same_cfg = (without_timings(json.load(open(os.path.join(m_t1, "config.json")))) ==
                without_timings(json.load(open(os.path.join(m_t2, "config.json")))))
    check(same_flow and same_cfg, "train --threads 1 and --threads 2 from one feature file give the "
          f"identical model (flow.safetensors {'same' if same_flow else 'differs'}, config.json "
          f"but its timings {'same' if same_cfg else 'differs'})")
    # A changed image makes the feature file stale: refused, not used.
    stale_cat = os.path.join(tmp, "stale")
    shutil.copytree(cat, stale_cat)
    stale_feats = os.path.join(tmp, "stale.safetensors")
    mirad("embed", os.path.join(stale_cat, "train"), "--out", stale_feats)
    victim = sorted(os.listdir(os.path.join(stale_cat, "train", "good")))[0]
    shutil.copy(os.path.join(cat, "test", "good", sorted(os.listdir(os.path.join(cat, "test", "good")))[0]),
                os.path.join(stale_cat, "train", "good", victim))
    p = mirad("train", "--data", stale_cat, "--features", stale_feats, "--out", os.path.join(tmp, "m3"), *FAST, ok=False)
    check(p.returncode == 2 and "changed since it was embedded" in p.stderr, "a stale feature file is refused")
    # The file records the backbone arithmetic that made it: FP32 on the CPU whatever
    # --precision says. One made in FP16 (as `embed --device cuda --precision fp16` writes it;
    # here its metadata is edited) is refused by a run that computes FP32 features.
    raw = open(feats, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    check(header["__metadata__"].get("precision") == "fp32", "embed on the CPU records fp32")
    header["__metadata__"]["precision"] = "fp16"
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    fp16_feats = os.path.join(tmp, "fp16.safetensors")
    open(fp16_feats, "wb").write(len(h).to_bytes(8, "little") + h + raw[8 + n:])
    p = mirad("train", "--data", cat, "--contamination", manifest, "--features", fp16_feats,
              "--out", os.path.join(tmp, "m4"), *FAST, ok=False)
    check(p.returncode == 2 and "made with fp16 backbone arithmetic but this run uses fp32" in p.stderr,
          "a feature file of another backbone arithmetic is refused")

    # predict: an image scored alone and among all test images. No statistic comes from the
    # batch (every one is in the model), so the score differs only by float rounding: oneDNN and
    # OpenBLAS choose their blocking by the batch's shape, and on some CPUs' kernels an
    # element's rounding follows it (seen on Zen 3: 1.2e-8 apart). Scores are robust-standardised
    # (the training scores' IQR is 1), so the tolerance is absolute, in IQR units:
    # SCORE_TOLERANCE, 1e-5, is about 850x the largest difference measured over the forced CPU
    # kernel paths (tools/cpu_paths.sh; 1.2e-8 on the haswell and zen paths, 0 on native AVX-512,
    # skylakex and sandybridge). A decision can flip only for a score within it of the threshold.
    SCORE_TOLERANCE = 1e-5
    test_imgs = sorted(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(cat, "test")) for f in fs)
    one = test_imgs[len(test_imgs) // 2]
    pa, pb = os.path.join(tmp, "pa"), os.path.join(tmp, "pb")
    a = json.loads(mirad("predict", "--model", m1, one, "--out", pa, "--json").stdout)
    b = json.loads(mirad("predict", "--model", m1, os.path.join(cat, "test"), "--out", pb, "--json").stdout)
    sa = a["predictions"][0]
    sb = [x for x in b["predictions"] if os.path.samefile(x["path"], one)][0]
    diff = abs(sa["score"] - sb["score"])
    print(f"score alone vs in a batch of {len(test_imgs)}: {sa['score']!r} vs {sb['score']!r} (|diff| {diff:.3g})")
    check(diff <= SCORE_TOLERANCE, f"score alone == score in a batch of {len(test_imgs)} to {SCORE_TOLERANCE} "
          f"({sa['score']} vs {sb['score']})")
    # The overlay PNGs: 8-bit colour-mapped, so a rounding difference shows only where a value
    # sits on a colour-bin edge. Measured: identical on all five paths; allowed: 0.1% of the
    # pixels, each by at most 8 levels (a few colour-map steps).
    from PIL import Image
    import numpy as np
    ha = np.asarray(Image.open(os.path.join(pa, sa["heatmap"])).convert("RGB"), dtype=np.int16)
    hb = np.asarray(Image.open(os.path.join(pb, sb["heatmap"])).convert("RGB"), dtype=np.int16)
    same_shape = ha.shape == hb.shape
    delta = np.abs(ha - hb).max(axis=2) if same_shape else None
    moved = float((delta > 0).mean()) if same_shape else 1.0
    check(same_shape and moved <= 1e-3 and int(delta.max()) <= 8,
          f"map alone == map in a batch to rounding ({moved:.2%} of pixels differ, "
          f"max {int(delta.max()) if same_shape else -1} levels)")
    check(os.path.exists(os.path.join(pb, "predictions.csv")), "predict writes predictions.csv")

    # eval: metrics with the resolution they were computed at.
    e = json.loads(mirad("eval", "--model", m1, "--data", cat, "--contamination", manifest, "--json").stdout)
    t = e["test"]
    check(all(k in t for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "good_fpr_at_threshold")),
          "eval reports image/pixel AUROC, AUPRO, F1, FPR at threshold")
    check(t["eval_resolution"] == "mask" and 0.5 < t["image_auroc"] <= 1.0, f"eval numbers are sane (AUROC {t['image_auroc']})")
    check(tree_hash(cat) == before, "no command modified the dataset")
    return cat, manifest, m1


def bad_input(tmp, cat, manifest, model):
    def refused(args, fragment, what):
        p = mirad(*args, ok=False)
        check(p.returncode == 2 and fragment in p.stderr, f"{what}: exit {p.returncode}, '{p.stderr.strip()[:120]}'")

    refused(["train", "--data", os.path.join(tmp, "nope"), "--out", os.path.join(tmp, "x")],
            "no such file", "missing data folder")
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty)
    refused(["clean", "--data", empty, "--out", os.path.join(tmp, "y")], "no images", "empty training set")
    refused(["train", "--data", cat, "--set", "train.budgte=5", "--out", os.path.join(tmp, "z")],
            "unknown key 'budgte'", "unknown config key")
    refused(["train", "--data", cat, "--set", "train.inner_lr=nan", "--out", os.path.join(tmp, "z")],
            "inner_lr", "NaN config value")
    refused(["train", "--data", cat, "--out", os.path.join(cat, "model")], "input", "output inside the dataset")
    # A corrupt image in the middle of the set: skipped and reported; --strict fails.
    broken = os.path.join(tmp, "broken")
    shutil.copytree(os.path.join(cat, "train", "good"), os.path.join(broken, "good"))
    victim = os.path.join(broken, "good", sorted(os.listdir(os.path.join(broken, "good")))[10])
    open(victim, "r+b").truncate(200)
    c = json.loads(mirad("clean", "--data", broken, "--out", os.path.join(tmp, "cb"), "--json", *FAST).stdout)
    check(len(c["skipped"]) == 1 and os.path.samefile(c["skipped"][0]["path"], victim),
          "a corrupt image is skipped and reported")
    refused(["clean", "--data", broken, "--strict", "--out", os.path.join(tmp, "cs"), *FAST],
            os.path.basename(victim), "--strict fails on the corrupt image, naming it")
    # Every image rejected by review: a clear error.
    lst = os.path.join(tmp, "all.txt")
    open(lst, "w").write("\n".join(os.path.join(cat, "train", "good", f) for f in os.listdir(os.path.join(cat, "train", "good"))))
    refused(["train", "--data", cat, "--reject", lst, "--out", os.path.join(tmp, "r")],
            "training images left", "every image rejected")
    # A model folder whose files do not belong together.
    bad_model = os.path.join(tmp, "badmodel")
    shutil.copytree(model, bad_model)
    cfg = json.load(open(os.path.join(bad_model, "config.json")))
    cfg["taps"][0]["channels"] += 1
    json.dump(cfg, open(os.path.join(bad_model, "config.json"), "w"))
    refused(["eval", "--model", bad_model, "--data", cat], "channels", "model/config mismatch")
    cfg["taps"][0]["channels"] -= 1
    cfg["backbone"]["weights_sha256"] = "0" * 64
    json.dump(cfg, open(os.path.join(bad_model, "config.json"), "w"))
    refused(["predict", "--model", bad_model, os.path.join(cat, "test")], "sha256", "other backbone weights")


def main():
    models = os.environ.get("MIRAD_MODELS", os.path.expanduser("~/.cache/mirad/models"))
    if not os.path.exists(os.path.join(models, "efficientnet_lite0", "weights.safetensors")):
        print("SKIP: the default backbone is not converted (run tools/setup.sh with network)")
        return 77
    watch(os.path.join(models, "efficientnet_lite0"))
    only = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--only" else None
    with tempfile.TemporaryDirectory() as tmp:
        if only in (None, "product", "bad_input"):
            cat, manifest, model = product(tmp)
            if only in (None, "bad_input"):
                bad_input(tmp, cat, manifest, model)
        if only in (None, "demo"):
            demo_refinement()
    if only in (None, "product", "bad_input"):
        # Failures were recorded call by call; this line says how much was guarded.
        check(not any("changed its input" in f for f in failures),
              f"no input changed across {guarded_calls} commands (watched: {len(WATCHED)} paths: "
              "backbone, dataset, manifest, models, feature file)")
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
