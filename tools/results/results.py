#!/usr/bin/env python3
"""Generates docs/RESULTS.md: the synth benchmark (every category) at several contamination
ratios (SoftPatch protocol, no overlap), for several training/refinement methods and seeds,
plus the CNN-feature kNN baseline. Every number comes from the `mirad` CLI (train, eval) and
is cached per run under --work, so an interrupted run resumes where it stopped.

Usage:
  tools/results/results.py --data /work/data/synth --work /work/results \
      [--methods default,plain,...] [--seeds 0,1,2] [--ratios 0,0.1,0.2,0.4] [--out docs/RESULTS.md]
The data is made by: mirad synth --out DATA --test-good 40 --test-defect 20 --seed 0
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time

# Method name -> `mirad train --set` overrides (on top of the shipped defaults).
METHODS = {
    "default": [],
    "plain": ["train.mode=plain", "refine.max_rounds=0"],
    "plain+ref": ["train.mode=plain"],
    "fomaml+ref": ["train.mode=maml", "train.second_order=false"],
    "somaml+ref": ["train.mode=maml", "train.second_order=true"],
    "maml-noref": ["train.mode=maml", "refine.max_rounds=0"],
    "in_sample": ["refine.scoring=in_sample"],
    "somaml+ref(in-sample)": ["train.mode=maml", "train.second_order=true", "refine.scoring=in_sample"],
    "fomaml+ref(in-sample)": ["train.mode=maml", "train.second_order=false", "refine.scoring=in_sample"],
    "cross_fit": ["refine.scoring=cross_fit"],
    "rule=iqr": ["refine.rule=iqr"],
    "rule=mad": ["refine.rule=mad"],
    "rule=gmm": ["refine.rule=gmm"],
    "soft": ["refine.soft=true"],
    "rule=mad(in-sample)": ["refine.rule=mad", "refine.scoring=in_sample"],
    "rule=gmm(in-sample)": ["refine.rule=gmm", "refine.scoring=in_sample"],
    "soft(in-sample)": ["refine.soft=true", "refine.scoring=in_sample"],
}


# What each method is, for the report (relative to the shipped defaults: plain training,
# cross-fit scoring, IQR rule, hard rejection).
LEGEND = {
    "knn": "CNN-feature nearest neighbour (PatchCore without coreset), trained on the contaminated set",
    "default": "the shipped default: plain Adam, refinement with cross-fit scoring (K = 4), IQR rule",
    "plain": "plain Adam on the contaminated set, no refinement",
    "in_sample": "plain Adam, refinement with in-sample scoring (the paper), IQR rule",
    "somaml+ref(in-sample)": "second-order MAML, refinement, in-sample scoring",
    "fomaml+ref(in-sample)": "first-order MAML, refinement, in-sample scoring",
    "somaml+ref": "second-order MAML, refinement, cross-fit scoring",
    "fomaml+ref": "first-order MAML, refinement, cross-fit scoring",
    "rule=gmm": "default with the two-component mixture rule",
    "rule=mad": "default with the median + 3 MAD rule",
    "soft": "default with soft down-weighting instead of rejection",
    "rule=gmm(in-sample)": "in-sample scoring, mixture rule",
    "rule=mad(in-sample)": "in-sample scoring, median + 3 MAD rule",
    "soft(in-sample)": "in-sample scoring, soft down-weighting",
}


def run(cmd, log):
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"command failed ({p.returncode}): {' '.join(cmd)}; see {log}")
    return json.loads(p.stdout)


def categories(data):
    return sorted(d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d, "train")))


def manifest(a, cat, ratio, seed):
    path = os.path.join(a.work, "manifests", f"{cat}_r{ratio}_s{seed}.json")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run([a.mirad, "contaminate", os.path.join(a.data, cat), "--ratio", str(ratio), "--seed",
             str(seed), "--manifest", path, "--json"], os.path.join(a.work, "log.txt"))
    return path


def common_subset(a, cat, seed):
    """Test images no ratio moves: the draws are nested prefixes of one seeded shuffle, so
    this is the test split minus what the largest ratio moves."""
    path = os.path.join(a.work, "manifests", f"{cat}_common_s{seed}.txt")
    if not os.path.exists(path):
        big = json.load(open(manifest(a, cat, max(a.ratios), seed)))
        moved = {os.path.normpath(os.path.join(a.data, cat, m["path"])) for m in big["moved"]}
        test = []
        for root, _, files in os.walk(os.path.join(a.data, cat, "test")):
            test += [os.path.normpath(os.path.join(root, f)) for f in files if f.endswith(".png")]
        with open(path, "w") as f:
            f.writelines(p + "\n" for p in sorted(test) if p not in moved)
    return path


def features(a, cat):
    path = os.path.join(a.work, "features", f"{cat}.safetensors")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        d = os.path.join(a.data, cat)
        run([a.mirad, "embed", os.path.join(d, "train"), os.path.join(d, "test"), "--out", path,
             "--json"], os.path.join(a.work, "log.txt"))
    return path


def one_run(a, method, cat, ratio, seed):
    key = f"{method}/{cat}_r{ratio}_s{seed}"
    res_path = os.path.join(a.work, "runs", key + ".json")
    if os.path.exists(res_path):
        return json.load(open(res_path))
    if a.report_only:
        return None
    os.makedirs(os.path.dirname(res_path), exist_ok=True)
    model = os.path.join(a.work, "models", key)
    os.makedirs(os.path.dirname(model), exist_ok=True)
    log = os.path.join(a.work, "log.txt")
    d = os.path.join(a.data, cat)
    m = manifest(a, cat, ratio, seed)
    sets = [x for s in METHODS[method] for x in ("--set", s)]
    t0 = time.time()
    tr = run([a.mirad, "train", "--data", d, "--contamination", m, "--features", features(a, cat),
              "--seed", str(seed), "--threads", str(a.threads), "--out", model, "--json"] + sets, log)
    t1 = time.time()
    ev = run([a.mirad, "eval", "--model", model, "--data", d, "--contamination", m, "--subset",
              common_subset(a, cat, seed), "--threads", str(a.threads), "--json"], log)
    out = {"method": method, "category": cat, "ratio": ratio, "seed": seed,
           "train_seconds": t1 - t0, "eval_seconds": time.time() - t1,
           "cleaning": tr["cleaning"], "rounds": len(tr["rounds"]), "stop": tr["stop_reason"],
           "test": ev["test"], "subset": ev.get("subset")}
    json.dump(out, open(res_path + ".tmp", "w"))
    os.replace(res_path + ".tmp", res_path)
    print(f"{key}: AUROC {out['test']['image_auroc']:.3f} (common {out['subset']['image_auroc']:.3f}),"
          f" cleaning F1 {tr['cleaning']['f1']:.3f}, {out['train_seconds']:.0f} s", flush=True)
    return out


# ---- kNN baseline (PatchCore without the coreset) over the same embedded features ----------

def read_safetensors(path):
    import numpy as np
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {k: np.frombuffer(data[t["data_offsets"][0]:t["data_offsets"][1]], dtype=np.float32)
           .reshape(t["shape"]) for k, t in header.items()}
    return out, meta


def knn_run(a, cat, ratio, seed):
    import numpy as np
    key = f"knn/{cat}_r{ratio}_s{seed}"
    res_path = os.path.join(a.work, "runs", key + ".json")
    if os.path.exists(res_path):
        return json.load(open(res_path))
    if a.report_only:
        return None
    feats, meta = read_safetensors(features(a, cat))
    paths = [os.path.normpath(p) for p in json.loads(meta["images"])]
    fine, coarse = (feats[k] for k in sorted(feats, key=lambda k: -feats[k].shape[2]))
    n, c, h, w = coarse.shape
    pooled = fine[:, :, :2 * h, :2 * w].reshape(n, fine.shape[1], h, 2, w, 2).mean((3, 5))
    x = np.concatenate([pooled, coarse], 1).reshape(n, -1, h * w).transpose(0, 2, 1)
    big = json.load(open(manifest(a, cat, ratio, seed)))
    moved = {os.path.normpath(os.path.join(a.data, cat, m["path"])) for m in big["moved"]}
    train = [i for i, p in enumerate(paths) if "/train/" in p or p in moved]
    test = [i for i, p in enumerate(paths) if "/test/" in p and p not in moved]
    bank = x[train].reshape(-1, x.shape[2])
    bank_sq = (bank * bank).sum(1)
    scores = []
    for i in test:
        t = x[i]
        d = (t * t).sum(1)[:, None] - 2 * t @ bank.T + bank_sq[None, :]
        scores.append(float(np.sqrt(np.maximum(d.min(1), 0)).max()))
    labels = [0 if "/good/" in paths[i] else 1 for i in test]
    common = set(open(common_subset(a, cat, seed)).read().split())
    sub = [j for j, i in enumerate(test) if paths[i] in common]
    out = {"method": "knn", "category": cat, "ratio": ratio, "seed": seed,
           "test": {"image_auroc": auroc(scores, labels)},
           "subset": {"image_auroc": auroc([scores[j] for j in sub], [labels[j] for j in sub])}}
    os.makedirs(os.path.dirname(res_path), exist_ok=True)
    json.dump(out, open(res_path, "w"))
    return out


def auroc(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


# ---- report ---------------------------------------------------------------------------------

def mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def per_seed_mean(runs, get):
    """Mean over categories for each seed, then mean ± sd over seeds."""
    by_seed = {}
    for r in runs:
        v = get(r)
        if v is not None:
            by_seed.setdefault(r["seed"], []).append(v)
    return [statistics.mean(v) for v in by_seed.values()]


def write_report(a, results, cats, command):
    lines = ["# Results on the generated benchmark", "",
             "Generated by `tools/results/results.py`; do not edit by hand. Command:", "",
             "```", command, "```", "",
             f"Data: `mirad synth --out DATA --test-good 40 --test-defect 20 --seed 0` "
             f"({len(cats)} categories: {', '.join(cats)}); 100 good training images, 40 good and "
             "100 defective test images (20 per defect type) per category. Contamination: "
             "SoftPatch's protocol, int(r * 100) defective test images join training and leave "
             "the test split (`mirad contaminate`, seeded). **Common subset**: the test images "
             "that no ratio moves (the draws are nested), the fair comparison across ratios. "
             "Figures are the mean over categories, then mean ± standard deviation over seeds "
             f"({', '.join(map(str, a.seeds))}). Pixel metrics at each mask's own resolution; "
             "AUPRO integrated to FPR 0.3. Cleaning: precision/recall/F1 of the rejected "
             "training images against the contaminants; at r = 0 the rate of false "
             "rejections. Seconds: `mirad train` per category (features reused from one "
             f"`mirad embed` per category), {a.threads} threads, this machine (2 cores).", ""]
    methods = [m for m in a.methods if any(r["method"] == m for r in results)]
    if any(r["method"] == "knn" for r in results):
        methods = ["knn"] + methods
    lines.extend(["| method | what |", "| --- | --- |"])
    lines.extend(f"| {m} | {LEGEND.get(m, ' '.join(METHODS.get(m, [])))} |" for m in methods)
    lines.append("")
    def seeds_of(m):
        return sorted({x["seed"] for x in results if x["method"] == m})
    def cats_of(m):
        return sorted({x["category"] for x in results if x["method"] == m})
    def table(title, get, ratios):
        lines.extend([f"### {title}", "", "| method | " + " | ".join(f"r = {r}" for r in ratios) + " |",
                      "| --- |" + " --- |" * len(ratios)])
        for m in methods:
            cells = []
            for r in ratios:
                runs = [x for x in results if x["method"] == m and x["ratio"] == r]
                cells.append(mean_sd(per_seed_mean(runs, get)) if runs else "-")
            # Methods may cover different categories (a long run cut short): say how many.
            n_s, n_c = len(seeds_of(m)), len(cats_of(m))
            lines.append(f"| {m} ({n_s} seed{'s' if n_s > 1 else ''}, {n_c} categor{'ies' if n_c > 1 else 'y'}) | "
                         + " | ".join(cells) + " |")
        lines.append("")
    table("Image AUROC, common test subset", lambda r: r["subset"]["image_auroc"], a.ratios)
    table("Image AUROC, full test split", lambda r: r["test"]["image_auroc"], a.ratios)
    table("Pixel AUROC, full test split", lambda r: r["test"].get("pixel_auroc"), a.ratios)
    table("AUPRO (FPR <= 0.3), full test split", lambda r: r["test"].get("aupro"), a.ratios)
    pos = [r for r in a.ratios if r > 0]
    table("Cleaning F1 (rejected vs contaminants)", lambda r: r.get("cleaning", {}).get("f1"), pos)
    table("Cleaning precision", lambda r: r.get("cleaning", {}).get("precision"), pos)
    table("Cleaning recall", lambda r: r.get("cleaning", {}).get("recall"), pos)
    if 0 in a.ratios or 0.0 in a.ratios:
        table("False rejections of clean images at r = 0 (rate)",
              lambda r: r.get("cleaning", {}).get("false_rejection_rate"), [0.0])
    table("Seconds per category (`mirad train`)", lambda r: r.get("train_seconds"), a.ratios)
    # Per category, the first method (the default) at each ratio.
    main = a.methods[0]
    lines.extend([f"### Per category: `{main}`, image AUROC on the common subset (kNN in brackets)",
                  "", "| category | " + " | ".join(f"r = {r}" for r in a.ratios) + " |",
                  "| --- |" + " --- |" * len(a.ratios)])
    for c in cats:
        cells = []
        for r in a.ratios:
            v = [x["subset"]["image_auroc"] for x in results if x["method"] == main and x["category"] == c and x["ratio"] == r]
            k = [x["subset"]["image_auroc"] for x in results if x["method"] == "knn" and x["category"] == c and x["ratio"] == r]
            cells.append((f"{statistics.mean(v):.3f}" if v else "-") + (f" ({statistics.mean(k):.3f})" if k else ""))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines.append("")
    text = "\n".join(lines) + "\n"
    tmp = a.out + ".tmp"
    open(tmp, "w").write(text)
    os.replace(tmp, a.out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--mirad", default="build/tools/mirad")
    ap.add_argument("--methods", default="default,plain,plain+ref,fomaml+ref,somaml+ref")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ratios", default="0,0.1,0.2,0.4")
    ap.add_argument("--categories", default="")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-knn", action="store_true")
    ap.add_argument("--out", default="docs/RESULTS.md")
    ap.add_argument("--report-only", action="store_true",
                    help="write the report from cached runs; run nothing")
    ap.add_argument("--define", action="append", default=[],
                    help="extra method: NAME=key=value;key=value (config overrides)")
    a = ap.parse_args()
    for d in a.define:
        name, _, sets = d.partition("=")
        METHODS[name] = [x for x in sets.split(";") if x]
    a.methods = a.methods.split(",")
    for m in a.methods:
        if m not in METHODS:
            sys.exit(f"unknown method {m}; known: {', '.join(METHODS)}")
    a.seeds = [int(s) for s in a.seeds.split(",")]
    a.ratios = [float(r) for r in a.ratios.split(",")]
    cats = a.categories.split(",") if a.categories else categories(a.data)
    os.makedirs(a.work, exist_ok=True)
    results = []
    command = " ".join(["tools/results/results.py"] + sys.argv[1:])
    for seed in a.seeds:
        for cat in cats:
            for ratio in a.ratios:
                if not a.no_knn:
                    results.append(knn_run(a, cat, ratio, seed))
                for m in a.methods:
                    results.append(one_run(a, m, cat, ratio, seed))
                results = [r for r in results if r is not None]
            # A partial report after every category, so a long run shows its progress.
            write_report(a, results, cats, command)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
