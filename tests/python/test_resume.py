#!/usr/bin/env python3
"""Resumable training through the CLI: `mirad train --checkpoint DIR` is killed with SIGKILL
in the middle of a round, rerun with the same arguments, and must end in the same model, bit
for bit, as a run never interrupted (CPU, fixed seed). Exits 77 (skipped) without the default
backbone. Usage: test_resume.py MIRAD
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

MIRAD = sys.argv[1]


def main():
    models = os.environ.get("MIRAD_MODELS", os.path.expanduser("~/.cache/mirad/models"))
    if not os.path.exists(os.path.join(models, "efficientnet_lite0", "weights.safetensors")):
        print("SKIP: the default backbone is not converted (run tools/setup.sh with network)")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([MIRAD, "synth", "--out", tmp, "--categories", "carpet", "--procedural",
                        "--train", "30", "--test-good", "4", "--test-defect", "2", "--size",
                        "128", "--seed", "5"], check=True, stdout=subprocess.DEVNULL)
        cat = os.path.join(tmp, "carpet")
        manifest = os.path.join(tmp, "m.json")
        subprocess.run([MIRAD, "contaminate", cat, "--ratio", "0.2", "--seed", "2", "--manifest",
                        manifest], check=True, stdout=subprocess.DEVNULL)
        common = ["train", "--data", cat, "--contamination", manifest, "--set", "train.budget=96",
                  "--set", "refine.folds=3", "--seed", "4", "--json"]
        ref = os.path.join(tmp, "ref")
        r = json.loads(subprocess.run([MIRAD, *common, "--out", ref], check=True,
                                      stdout=subprocess.PIPE).stdout)
        rounds = len(r["rounds"])
        print(f"uninterrupted: {rounds} rounds, {r['rejected']} rejected, {r['seconds']:.1f} s")
        if rounds < 2:
            print("FAIL: the reference run needs at least 2 rounds to kill one mid-way")
            return 1
        ck = os.path.join(tmp, "ck")
        out = os.path.join(tmp, "resumed")
        args = [MIRAD, *common, "--out", out, "--checkpoint", ck]
        # Kill it once round 1's checkpoint exists and round 2 is under way.
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        while not os.path.exists(os.path.join(ck, "checkpoint.json")):
            if p.poll() is not None or time.time() - t0 > 600:
                print("FAIL: the run ended before writing a checkpoint")
                return 1
            time.sleep(0.05)
        time.sleep(min(1.0, r["refine_seconds"] / rounds / 3))
        if p.poll() is not None:
            print("FAIL: the run finished before it could be killed")
            return 1
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        done = json.load(open(os.path.join(ck, "checkpoint.json")))["rounds_done"]
        print(f"killed with SIGKILL after {done} checkpointed round(s)")
        if os.path.exists(out):
            print("FAIL: a model was written by the killed run")
            return 1
        q = json.loads(subprocess.run(args, check=True, stdout=subprocess.PIPE).stdout)
        same_flow = open(os.path.join(ref, "flow.safetensors"), "rb").read() == \
            open(os.path.join(out, "flow.safetensors"), "rb").read()
        a = json.load(open(os.path.join(ref, "config.json")))
        b = json.load(open(os.path.join(out, "config.json")))
        for j in (a, b):
            j.pop("training")
        print(f"resumed from round {q['resumed_from_round']}: flow identical {same_flow}, "
              f"config identical {a == b}, checkpoint removed {not os.path.exists(ck)}")
        ok = same_flow and a == b and q["resumed_from_round"] == done and not os.path.exists(ck)
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
