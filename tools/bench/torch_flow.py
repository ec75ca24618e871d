#!/usr/bin/env python3
"""PyTorch baseline of mirad's coupling flow: the same graph (8 blocks, permutation, subnet
[x1, c] -> 2D -> ReLU -> (s, t), soft clamp, affine, ActNorm, NLL), timed for forward+backward,
for the HVP by double backward, and (--maml) for one MAML outer step as mirad's trainer takes
it: B = 4 tasks of 512 support + 512 query rows, one inner SGD step (alpha on the
per-dimension NLL), the meta-gradient first order or second order (create_graph through the
inner step), summed over tasks. Prints one JSON line per case.

Run with Debian's python3-torch on OpenBLAS (libopenblas0-pthread); the reference BLAS is ~15x
slower and would make the comparison meaningless. The script prints the BLAS torch reports.
"""
import argparse
import json
import math
import time

import torch


def make_params(D, C, K, gen):
    H, d1, d2 = 2 * D, D // 2, D - D // 2
    ps, perms = [], []
    for _ in range(K):
        b1 = 1 / math.sqrt(d1 + C)
        b2 = 0.1 / math.sqrt(H)
        ps += [(torch.rand(H, d1 + C, generator=gen) * 2 - 1) * b1, torch.zeros(H),
               (torch.rand(2 * d2, H, generator=gen) * 2 - 1) * b2, torch.zeros(2 * d2)]
        perms.append(torch.randperm(D, generator=gen))
    ps += [torch.zeros(D), torch.zeros(D)]
    return [p.requires_grad_() for p in ps], perms


def mean_nll(ps, perms, x, c, clamp=1.9):
    D = x.shape[1]
    d1 = D // 2
    log_det = torch.zeros(x.shape[0])
    for k, perm in enumerate(perms):
        W1, b1, W2, b2 = ps[4 * k:4 * k + 4]
        xp = x[:, perm]
        x1, x2 = xp[:, :d1], xp[:, d1:]
        a1 = torch.addmm(b1, torch.cat([x1, c], 1), W1.t())
        o = torch.addmm(b2, torch.relu(a1), W2.t())
        u, t = o.chunk(2, 1)
        s = clamp * torch.tanh(u / clamp)
        x = torch.cat([x1, x2 * torch.exp(s) + t], 1)
        log_det = log_det + s.sum(1)
    ls, b = ps[-2], ps[-1]
    z = x * torch.exp(ls) + b
    nll = 0.5 * (z * z).sum(1) - log_det - ls.sum() + 0.5 * D * math.log(2 * math.pi)
    return nll.mean()


def bench(fn, min_time):
    fn()  # warm-up
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - start
        if el >= min_time and n >= 2:
            return el / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="96,256,1024")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--maml", default="", help="dims for the MAML outer step, e.g. 40,112")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.randn(64, 64) @ torch.randn(64, 64)  # load the BLAS, then read which one it is
    libs = [l.split()[-1] for l in open("/proc/self/maps") if "blas" in l.lower()]
    blas = "openblas" if any("openblas" in l for l in libs) else (libs[0] if libs else "unknown")
    gen = torch.Generator().manual_seed(1)
    if a.maml:
        maml_cases(a, blas, gen)
    for D in map(int, a.dims.split(",")) if a.dims else []:
        ps, perms = make_params(D, 64, 8, gen)
        x = torch.randn(a.n, D, generator=gen)
        c = torch.randn(a.n, 64, generator=gen)
        v = [torch.randn_like(p) for p in ps]

        def fwd_bwd():
            loss = mean_nll(ps, perms, x, c)
            torch.autograd.grad(loss, ps)

        def hvp():
            loss = mean_nll(ps, perms, x, c)
            g = torch.autograd.grad(loss, ps, create_graph=True)
            torch.autograd.grad(g, ps, grad_outputs=v)

        for name, fn in (("forward_backward", fwd_bwd), ("hvp", hvp)):
            t = bench(fn, a.min_time)
            print(json.dumps({"impl": "torch", "torch": torch.__version__, "blas": blas,
                              "threads": a.threads, "case": name, "dim": D, "n": a.n,
                              "ms": round(t * 1e3, 3)}), flush=True)


def maml_cases(a, blas, gen):
    for D in map(int, a.maml.split(",")):
        ps, perms = make_params(D, 64, 8, gen)
        tasks = [tuple(torch.randn(512, w, generator=gen) for w in (D, 64, D, 64)) for _ in range(4)]
        alpha = 1e-3 / D  # mirad's inner step: 1e-3 on the per-dimension NLL

        def step(second):
            total = [torch.zeros_like(p) for p in ps]
            for xs, cs, xq, cq in tasks:
                ls = mean_nll(ps, perms, xs, cs)
                g = torch.autograd.grad(ls, ps, create_graph=second)
                fast = [p - alpha * gi for p, gi in zip(ps, g)]
                if not second:  # first order: the query gradient at the adapted point
                    fast = [f.detach().requires_grad_() for f in fast]
                lq = mean_nll(fast, perms, xq, cq)
                gq = torch.autograd.grad(lq, ps if second else fast)
                total = [t + gi for t, gi in zip(total, gq)]
            return total

        for name, second in (("maml_first_order", False), ("maml_second_order", True)):
            t = bench(lambda: step(second), a.min_time)
            print(json.dumps({"impl": "torch", "torch": torch.__version__, "blas": blas,
                              "threads": a.threads, "case": name, "dim": D, "n": 4 * 1024,
                              "ms": round(t * 1e3, 3)}), flush=True)


if __name__ == "__main__":
    main()
