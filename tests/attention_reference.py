"""Textbook float64 numpy versions of the attention and transformer layers (test references).

Written from the equations with explicit loops where that keeps them obviously right, and
independently of dlfun's code paths (no shared helpers, no JAX).
"""

import math

import numpy as np


def attention(q, k, v, visible=None):
    """softmax(q kᵀ/√d) v per batch row and head; zero weights where not ``visible`` and for
    rows with nothing visible. q (..., T, H, D), k (..., S, H, D), v (..., S, H, Dv), visible
    broadcastable to (..., H, T, S). Returns (out (..., T, H, Dv), weights (..., H, T, S))."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    batch, (T, H, D), S = q.shape[:-3], q.shape[-3:], k.shape[-3]
    vis = np.ones(batch + (H, T, S), bool) if visible is None else np.broadcast_to(
        np.asarray(visible, bool), batch + (H, T, S))
    weights = np.zeros(batch + (H, T, S))
    out = np.zeros(batch + (T, H, v.shape[-1]))
    for idx in np.ndindex(*batch, H, T):
        *b, h, t = idx
        b = tuple(b)
        seen = vis[idx]
        if not seen.any():
            continue
        logits = np.array([q[b + (t, h)] @ k[b + (s, h)] for s in range(S)]) / math.sqrt(D)
        e = np.where(seen, np.exp(logits - logits[seen].max()), 0.0)
        weights[idx] = e / e.sum()
        out[b + (t, h)] = weights[idx] @ v[b + (slice(None), h)]
    return out, weights


def causal(T, S=None):
    """visible[i, j] = j <= i."""
    S = T if S is None else S
    return np.tril(np.ones((T, S), bool))


def layer_norm(x, scale, bias, eps):
    x = np.asarray(x, np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(scale) + np.asarray(bias)


def rms_norm(x, scale, eps):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * np.asarray(scale)


def rope(x, positions, base=10000.0):
    """Rotary encoding as complex multiplication: z_i = x_i + i x_{i+D/2} times e^{i p θ_i}."""
    x = np.asarray(x, np.float64)
    half = x.shape[-1] // 2
    theta = base ** (-2.0 * np.arange(half) / x.shape[-1])
    z = x[..., :half] + 1j * x[..., half:]
    rot = np.exp(1j * np.asarray(positions, np.float64)[:, None, None] * theta)  # (T, 1, D/2)
    z = z * rot
    return np.concatenate([z.real, z.imag], -1)


def sinusoids(positions, features, base=10000.0):
    """PE[p, 2i] = sin(p / base^(2i/E)), PE[p, 2i+1] = cos(p / base^(2i/E)), by loops."""
    pe = np.zeros((len(positions), features))
    for row, p in enumerate(positions):
        for j in range(features):
            angle = p / base ** (2 * (j // 2) / features)
            pe[row, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return pe


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def mha(p, x, context=None, visible=None, positions=None, rope_base=None):
    """Multi-head attention from dlfun's parameter dict (fused qkv or query + kv)."""
    x = np.asarray(x, np.float64)
    p = {name: np.asarray(a, np.float64) for name, a in p.items()}
    if context is None:
        qkv = np.einsum("...te,ecnd->...tcnd", x, p["qkv_kernel"]) + p["qkv_bias"]
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    else:
        q = np.einsum("...te,end->...tnd", x, p["query_kernel"]) + p["query_bias"]
        kv = np.einsum("...se,ecnd->...scnd", np.asarray(context, np.float64),
                       p["kv_kernel"]) + p["kv_bias"]
        k, v = kv[..., 0, :, :], kv[..., 1, :, :]
    if rope_base is not None:
        q, k = rope(q, positions, rope_base), rope(k, positions, rope_base)
    heads, _ = attention(q, k, v, visible)
    return np.einsum("...tnd,nde->...te", heads, p["out_kernel"]) + p["out_bias"]


def block(p, x, visible=None, positions=None, rope_base=None, eps=1e-5):
    """Pre-norm block: x + mha(ln(x)); then x + mlp(ln(x)) with the tanh GELU."""
    p = {part: {name: np.asarray(a, np.float64) for name, a in group.items()}
         for part, group in p.items()}
    ln1, ln2, mlp = p["attention_norm"], p["mlp_norm"], p["mlp"]
    x = np.asarray(x, np.float64)
    x = x + mha(p["attention"], layer_norm(x, ln1["scale"], ln1["bias"], eps),
                visible=visible, positions=positions, rope_base=rope_base)
    h = layer_norm(x, ln2["scale"], ln2["bias"], eps)
    h = gelu_tanh(h @ mlp["hidden_kernel"] + mlp["hidden_bias"])
    return x + h @ mlp["output_kernel"] + mlp["output_bias"]
