"""Write the golden fixtures tests/fixtures/golden-gpt-{causal,mlm}.json.

Everything is computed in float64 so the fixture is as exact as the math allows;
the TF.js tests compare their float32 results against it with a tolerance.
Run with the system python: /usr/bin/python3 scripts/reference/gen_golden.py
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt_reference as ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")
DTYPE = torch.float64
B, T = 3, 8
ADAMW = {"lr": 0.01, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weightDecay": 0.1, "steps": 2}


def dump_tensors(tensors):
    return {name: {"shape": list(t.shape), "data": t.detach().reshape(-1).tolist()}
            for name, t in tensors.items()}


def make_params(cfg, gen):
    params = ref.init_params(cfg, generator=gen, dtype=DTYPE)
    with torch.no_grad():
        # Fresh init has zero biases and unit gammas; nudge them so a wrong
        # bias/gamma path in the TF.js model actually changes loss and grads.
        for t in params.values():
            if t.dim() == 1:
                t.add_(torch.randn(t.shape, generator=gen, dtype=DTYPE) * 0.02)
    return params


def finite_diff_check(params, cfg, batch, grads, gen, n_per_param=3, h=1e-5):
    """Central differences on a few random entries of every parameter; returns max rel err.

    Entries with |grad| < 1e-4 (many at this small init; the key part of bQkv is
    exactly 0 by softmax shift invariance) are judged on absolute error instead,
    since float64 rounding in the difference is ~1e-11 absolute.
    """
    worst = 0.0
    with torch.no_grad():
        for name, t in params.items():
            flat = t.view(-1)
            for k in torch.randint(flat.numel(), (n_per_param,), generator=gen).tolist():
                orig = flat[k].item()
                flat[k] = orig + h
                lp = ref.loss_fn(params, cfg, *batch).item()
                flat[k] = orig - h
                lm = ref.loss_fn(params, cfg, *batch).item()
                flat[k] = orig
                num = (lp - lm) / (2 * h)
                ana = grads[name].view(-1)[k].item()
                rel = abs(num - ana) / max(abs(num), abs(ana), 1e-4)
                worst = max(worst, rel)
    return worst


def build(objective, seed):
    cfg = {"vocabSize": 23, "nEmbd": 16, "nHead": 2, "nLayer": 2, "blockSize": 8,
           "objective": objective}
    gen = torch.Generator().manual_seed(seed)
    params = make_params(cfg, gen)
    idx = torch.randint(cfg["vocabSize"], (B, T), generator=gen)
    targets = torch.randint(cfg["vocabSize"], (B, T), generator=gen)
    weights = None
    if objective == "mlm":
        weights = (torch.rand(B, T, generator=gen) < 0.35).to(DTYPE)
        weights[:, 0] = 1.0  # guarantee at least one scored position per row
    batch = (idx, targets, weights)

    initial = {n: t.detach().clone() for n, t in params.items()}
    loss = ref.loss_fn(params, cfg, *batch)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))

    # Pre-activation scale is tiny at init, so the loss should sit near uniform.
    assert abs(loss.item() - math.log(cfg["vocabSize"])) < 0.1, loss.item()
    fd_err = finite_diff_check(params, cfg, batch, grads, gen)
    assert fd_err < 1e-5, f"finite-difference mismatch {fd_err}"

    # Two AdamW steps on the same batch, constant lr, no clipping.
    opt = ref.make_adamw(params, ADAMW["lr"], (ADAMW["beta1"], ADAMW["beta2"]),
                         ADAMW["eps"], ADAMW["weightDecay"])
    for _ in range(ADAMW["steps"]):
        opt.zero_grad()
        ref.loss_fn(params, cfg, *batch).backward()
        opt.step()

    fixture = {
        "generator": "scripts/reference/gen_golden.py",
        "torchVersion": torch.__version__,
        "config": cfg,
        "idx": idx.tolist(),
        "targets": targets.tolist(),
    }
    if weights is not None:
        fixture["weights"] = weights.to(torch.int64).tolist()
    fixture.update({
        "params": dump_tensors(initial),
        "loss": loss.item(),
        "grads": dump_tensors(grads),
        "adamw": dict(ADAMW, params=dump_tensors(params)),
    })
    path = os.path.join(OUT_DIR, f"golden-gpt-{objective}.json")
    with open(path, "w") as f:
        json.dump(fixture, f)
        f.write("\n")
    print(f"{objective}: loss={loss.item():.12f} (ln V={math.log(cfg['vocabSize']):.6f}) "
          f"fd max rel err={fd_err:.3e} -> {os.path.relpath(path, ROOT)} "
          f"({os.path.getsize(path) / 1024:.0f} KiB)")


if __name__ == "__main__":
    torch.set_num_threads(1)  # determinism; the model is tiny anyway
    os.makedirs(OUT_DIR, exist_ok=True)
    build("causal", seed=1234)
    build("mlm", seed=5678)
