"""PyTorch reference for the peertrain GPT (see engine/ for the TF.js model).

Parameters live in a dict of tensors under the TF.js names and layouts
(every weight matrix is [in, out], y = x @ W), so fixtures can be compared
with the TF.js model entry by entry without any transposes.
"""
import math

import torch
import torch.nn.functional as F

LN_EPS = 1e-5


def param_shapes(cfg):
    """Ordered {name: shape} for a config dict with vocabSize/nEmbd/nLayer/blockSize."""
    V, C, L, Tmax = cfg["vocabSize"], cfg["nEmbd"], cfg["nLayer"], cfg["blockSize"]
    shapes = {"wte": [V, C], "wpe": [Tmax, C]}
    for i in range(L):
        p = f"h.{i}."
        shapes.update({
            p + "ln1.gamma": [C], p + "ln1.beta": [C],
            p + "attn.wQkv": [C, 3 * C], p + "attn.bQkv": [3 * C],
            p + "attn.wProj": [C, C], p + "attn.bProj": [C],
            p + "ln2.gamma": [C], p + "ln2.beta": [C],
            p + "mlp.wFc": [C, 4 * C], p + "mlp.bFc": [4 * C],
            p + "mlp.wProj": [4 * C, C], p + "mlp.bProj": [C],
        })
    shapes["lnF.gamma"] = [cfg["nEmbd"]]
    shapes["lnF.beta"] = [cfg["nEmbd"]]
    return shapes


def init_params(cfg, generator=None, dtype=torch.float32):
    """nanoGPT-style init; returns {name: leaf tensor with requires_grad}."""
    std = 0.02
    # Residual projections add into the stream once per layer (twice per block),
    # so shrink them to keep the residual variance roughly depth-independent.
    proj_std = 0.02 / math.sqrt(2 * cfg["nLayer"])
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith(".gamma"):
            t = torch.ones(shape, dtype=dtype)
        elif len(shape) == 1:  # biases and LayerNorm betas
            t = torch.zeros(shape, dtype=dtype)
        else:
            s = proj_std if name.endswith("wProj") else std
            t = torch.randn(shape, generator=generator, dtype=dtype) * s
        params[name] = t.requires_grad_(True)
    return params


def layer_norm(x, gamma, beta):
    return F.layer_norm(x, (x.shape[-1],), gamma, beta, LN_EPS)


def attention(h, p, prefix, n_head, causal):
    B, T, C = h.shape
    hs = C // n_head
    qkv = h @ p[prefix + "wQkv"] + p[prefix + "bQkv"]
    q, k, v = qkv.split(C, dim=-1)
    # [B, T, C] -> [B, nHead, T, hs]: head j owns columns j*hs..(j+1)*hs.
    q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
    if causal:
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
    y = F.softmax(scores, dim=-1) @ v
    y = y.transpose(1, 2).reshape(B, T, C)  # concatenate heads in order
    return y @ p[prefix + "wProj"] + p[prefix + "bProj"]


def mlp(h, p, prefix):
    a = F.gelu(h @ p[prefix + "wFc"] + p[prefix + "bFc"], approximate="tanh")
    return a @ p[prefix + "wProj"] + p[prefix + "bProj"]


def forward(params, cfg, idx):
    """Logits [B, T, vocab] for int64 idx [B, T]."""
    T = idx.shape[1]
    causal = cfg.get("objective", "causal") == "causal"
    x = params["wte"][idx] + params["wpe"][:T]
    for i in range(cfg["nLayer"]):
        p = f"h.{i}."
        x = x + attention(layer_norm(x, params[p + "ln1.gamma"], params[p + "ln1.beta"]),
                          params, p + "attn.", cfg["nHead"], causal)
        x = x + mlp(layer_norm(x, params[p + "ln2.gamma"], params[p + "ln2.beta"]),
                    params, p + "mlp.")
    x = layer_norm(x, params["lnF.gamma"], params["lnF.beta"])
    return x @ params["wte"].t()  # tied head, no bias


def loss_fn(params, cfg, idx, targets, weights=None):
    logits = forward(params, cfg, idx)
    V = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
    if cfg.get("objective", "causal") == "mlm":
        w = weights.reshape(-1).to(ce.dtype)
        return (ce * w).sum() / w.sum()
    return ce.mean()


def make_adamw(params, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    """AdamW with decay on 2-D tensors only (matrices and embeddings), not on biases/LN."""
    decay = [t for t in params.values() if t.dim() >= 2]
    no_decay = [t for t in params.values() if t.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=betas, eps=eps)


def count_params(params):
    return sum(t.numel() for t in params.values())
