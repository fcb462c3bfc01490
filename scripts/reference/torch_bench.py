"""PyTorch reference trainer for `npm run bench`: same GPT as the TF.js engine,
trained on random tokens, so its throughput is a fair yardstick for ours.

/usr/bin/python3 scripts/reference/torch_bench.py --preset tiny --batch 16 --seq 128 \
    --steps 5 --warmup 2 --threads 2 [--vocab 96]
Prints one JSON line.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt_reference as ref  # noqa: E402

PRESETS = {
    "tiny": {"nLayer": 4, "nHead": 4, "nEmbd": 128, "blockSize": 128},
    "small": {"nLayer": 6, "nHead": 6, "nEmbd": 384, "blockSize": 256},
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=None, help="defaults to the preset's blockSize")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--vocab", type=int, default=96)  # a char vocabulary
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = dict(PRESETS[args.preset], vocabSize=args.vocab, objective="causal")
    T = args.seq or cfg["blockSize"]
    if T > cfg["blockSize"]:
        ap.error(f"--seq {T} exceeds blockSize {cfg['blockSize']} of preset {args.preset}")
    if args.steps < 1:
        ap.error("--steps must be >= 1")

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    params = ref.init_params(cfg, generator=gen, dtype=torch.float32)
    opt = ref.make_adamw(params, lr=3e-4, weight_decay=0.1)

    def step():
        # Random tokens: throughput does not depend on the data, only on shapes.
        seq = torch.randint(args.vocab, (args.batch, T + 1), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss = ref.loss_fn(params, cfg, seq[:, :-1], seq[:, 1:])
        loss.backward()
        opt.step()
        return loss.item()  # .item() forces the step to finish before the clock stops

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    elapsed = time.perf_counter() - t0

    sec_per_step = elapsed / args.steps
    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": args.threads,
        "preset": args.preset,
        "batch": args.batch,
        "seq": T,
        "tokensPerSec": round(args.batch * T / sec_per_step, 1),
        "msPerStep": round(sec_per_step * 1000, 2),
        "params": ref.count_params(params),
        # ru_maxrss is KiB on Linux
        "peakRssMB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
