"""Dice / Tversky with softmax at (8, 21, 128, 128) against MONAI, interleaved (issue 14).

    python scripts/bench_dice_interleaved.py [--rounds 200] [--threads 2] [--kinds dice,tversky]

On a shared machine a one-after-the-other benchmark can give the two sides different
conditions for a whole row (the other tenants' load changes by the second); here each round
times one fastloss call (out=, and allocating) and one MONAI forward + backward back to back,
the order alternating, so both see the same minutes. Each timed call follows an untimed one
of its own, which puts its buffers back in the caches as a loop of its own calls would: timed
right after MONAI's call, whose temporaries (~100 MB) push fastloss's 33 MB out of the L3,
fastloss's dice took 1.61 ms against 1.18 ms in a loop of its own (2 threads, quiet).
Prints the medians and their ratio. float32, fastloss on `--threads` threads and torch on as
many. Two target forms (`--targets`): one-hot float targets of the logits' shape ("onehot",
MONAI's DiceLoss(softmax=True)), and class-index maps ("index": fastloss takes (N, H, W)
integer labels; MONAI takes (N, 1, H, W) labels with to_onehot_y=True, the form of its
segmentation tutorials, and builds the one-hot tensor itself on every call).
"""
import argparse
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kinds", default="dice,tversky")
    parser.add_argument("--targets", default="onehot,index")
    args = parser.parse_args(argv)

    import torch
    from monai.losses import DiceLoss, TverskyLoss

    import fastloss
    from fastloss.bench.cases import one_hot_inputs

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    shape = (8, 21, 128, 128)
    x, t = one_hot_inputs(shape, np.float32, rng).arrays
    labels = t.argmax(1)
    out = np.empty_like(x)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    # the targets each side takes, by form: (fastloss's, MONAI's, MONAI's to_onehot_y)
    forms = {"onehot": (t, torch.from_numpy(t), False),
             "index": (labels, torch.from_numpy(labels[:, None].copy()), True)}
    clock = time.perf_counter
    print(f"# (8, 21, 128, 128) float32 softmax, {args.threads} threads, {args.rounds} "
          f"interleaved rounds, SIMD {fastloss.simd_level()}")
    print("| loss | targets | fastloss out= | fastloss allocating | MONAI | MONAI / out= | "
          "MONAI / allocating |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for kind, form in [(k, f) for k in args.kinds.split(",") for f in args.targets.split(",")]:
        ours = getattr(fastloss, kind)
        t, tt, onehot_y = forms[form]
        module = (DiceLoss(softmax=True, to_onehot_y=onehot_y) if kind == "dice"
                  else TverskyLoss(softmax=True, to_onehot_y=onehot_y))
        check = ours(x, t, activation="softmax")
        theirs = module(xt, tt).item()
        assert abs(check.loss - theirs) < 1e-4 * max(1.0, abs(theirs)), (check.loss, theirs)
        def monai_step():
            xt.grad = None
            module(xt, tt).backward()

        calls = {
            "out": lambda: ours(x, t, activation="softmax", out=out, n_threads=args.threads),
            "alloc": lambda: ours(x, t, activation="softmax", n_threads=args.threads),
            "monai": monai_step,
        }
        times = {name: [] for name in calls}
        order = list(calls)
        for r in range(args.rounds + 5):
            for name in (order if r % 2 == 0 else order[::-1]):
                calls[name]()   # untimed: its own steady state (see the module docstring)
                start = clock()
                calls[name]()
                if r >= 5:   # warm-up rounds
                    times[name].append(clock() - start)
        med = {k: float(np.median(v)) for k, v in times.items()}
        print(f"| {kind} softmax | {form} | {med['out'] * 1e3:.3f} ms | "
              f"{med['alloc'] * 1e3:.3f} ms | {med['monai'] * 1e3:.2f} ms | "
              f"{med['monai'] / med['out']:.2f} | {med['monai'] / med['alloc']:.2f} |")


if __name__ == "__main__":
    main()
