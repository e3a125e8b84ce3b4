"""Chapter 10: the course's GPT in NumPy alone, forward and backward by hand, and AdamW.

Every piece is a pair of functions: ``*_forward`` returns its output and a cache of
what its backward needs; ``*_backward`` takes the gradient of the loss with respect
to the output (``dy``, the same shape as the output) and returns the gradients with
respect to the inputs and the weights. Shapes: B rows of a batch, T positions,
C channels (``n_embd``), H heads of D = C / H channels, V tokens in the vocabulary.

``NumpyGPT`` holds the same parameters as ``gptlib.model.GPT``, under the same names
and shapes (``state_dict()`` in, ``state_dict()`` out), so weights move between the
two freely. This module imports no torch: everything is NumPy's, except the error
function of the exact GELU in float64, which NumPy lacks and SciPy provides.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

# --------------------------------------------------------------------------- the pieces


def rows(a: np.ndarray) -> np.ndarray:
    """``(..., n)`` -> ``(rows, n)``: every position of every batch row as one row."""
    return a.reshape(-1, a.shape[-1])


def embedding_forward(table: np.ndarray, idx: np.ndarray):
    """y[b, t] = table[idx[b, t]]: a lookup."""
    return table[idx], idx


def embedding_backward(dy: np.ndarray, idx: np.ndarray, n_rows: int) -> np.ndarray:
    """dtable[i] = sum of dy over the positions that looked up row i (unused rows: 0)."""
    dtable = np.zeros((n_rows, dy.shape[-1]), dtype=dy.dtype)
    np.add.at(dtable, idx.reshape(-1), rows(dy))
    return dtable


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None):
    """y = x W^T + b, with W stored (out, in) as torch stores it."""
    y = x @ weight.T
    if bias is not None:
        y = y + bias
    return y, (x, weight)


def linear_backward(dy: np.ndarray, cache):
    """dx = dy W;  dW = dy^T x (summed over every row);  db = dy summed over every row."""
    x, weight = cache
    dx = dy @ weight
    dweight = rows(dy).T @ rows(x)
    dbias = rows(dy).sum(axis=0)
    return dx, dweight, dbias


def layernorm_forward(x: np.ndarray, gain: np.ndarray, bias: np.ndarray, eps: float = 1e-5):
    """y = gain * x_hat + bias, x_hat = (x - mean) / sqrt(var + eps) over the channels."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # the biased variance, as torch
    rstd = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * rstd
    return x_hat * gain + bias, (x_hat, rstd, gain)


def layernorm_backward(dy: np.ndarray, cache):
    """With g = dy * gain: dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)).

    Every x_i moves the mean and the variance, hence every x_hat_j: the two mean terms
    are that coupling. dgain = sum of dy * x_hat, dbias = sum of dy, over every row.
    """
    x_hat, rstd, gain = cache
    g = dy * gain
    dx = rstd * (g - g.mean(axis=-1, keepdims=True)
                 - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
    return dx, rows(dy * x_hat).sum(axis=0), rows(dy).sum(axis=0)


SQRT_2 = math.sqrt(2.0)
SQRT_2PI = math.sqrt(2.0 * math.pi)
# Abramowitz & Stegun's formula 7.1.26: for z >= 0, erfc(z) = poly(t) exp(-z^2) with
# t = 1 / (1 + P z), poly(t) = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))), within 1.5e-7.
AS_P = 0.3275911
AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def normal_cdf(x: np.ndarray):
    """Phi(x), the normal distribution's CDF, and exp(-x^2 / 2), which its derivative needs.

    Phi(x) = (1 + erf(x / sqrt 2)) / 2. In float64 the error function is SciPy's, exact to
    the last bits, so the gradient checks can ask for 1e-10. In float32, the training
    precision, SciPy computes it one number at a time; Abramowitz & Stegun's formula, a
    handful of whole-array operations, is twice as fast and within 3e-7 of Phi, about one
    float32 step of 1.0. It gives the tail Phi(-|x|) = erfc(|x| / sqrt 2) / 2 directly,
    so Phi of a very negative x is not 1 minus almost 1.
    """
    gauss = np.exp(x * x * -0.5)
    if x.dtype != np.float32:
        cdf = erf(x * (1.0 / SQRT_2))
        cdf += 1.0  # in place: on a (B, T, 4C) array each temporary costs as much as the sum
        cdf *= 0.5
        return cdf, gauss
    f32 = np.float32
    t = np.abs(x)
    t *= f32(AS_P / SQRT_2)
    t += f32(1.0)
    np.reciprocal(t, out=t)
    tail = t * f32(AS_A[-1])
    for a in AS_A[-2::-1]:  # Horner's rule, from a5 down to a1
        tail += f32(a)
        tail *= t
    tail *= gauss
    tail *= f32(0.5)  # Phi(-|x|)
    return np.where(x < 0, tail, f32(1.0) - tail), gauss


def gelu_forward(x: np.ndarray):
    """GELU(x) = x * Phi(x), Phi the normal CDF: the exact GELU, torch's ``F.gelu``."""
    cdf, gauss = normal_cdf(x)
    return x * cdf, (x, cdf, gauss)


def gelu_backward(dy: np.ndarray, cache) -> np.ndarray:
    """d/dx [x Phi(x)] = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the normal density."""
    x, cdf, gauss = cache
    slope = x * (1.0 / SQRT_2PI)
    slope *= gauss  # x phi(x)
    slope += cdf
    return dy * slope


def softmax(z: np.ndarray) -> np.ndarray:
    """exp(z) / sum exp(z) over the last axis (the max subtracted first: no overflow)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def softmax_backward(dp: np.ndarray, p: np.ndarray) -> np.ndarray:
    """dz_i = p_i (dp_i - sum_j dp_j p_j): the Jacobian diag(p) - p p^T, applied to dp."""
    return p * (dp - (dp * p).sum(axis=-1, keepdims=True))


def causal_attention_forward(x, w_query, w_key, w_value, w_proj, b_proj, n_head: int):
    """Masked multi-head self-attention, every head at once: (B, T, C) -> (B, T, C).

    q, k, v = x W^T split into H heads of D channels; weights = softmax(q k^T / sqrt(D)),
    with the future masked out; each head's output is weights @ v; the heads side by side
    go through the output projection.
    """
    B, T, C = x.shape
    D = C // n_head

    def heads(a):  # (B, T, C) -> (B, H, T, D)
        return a.reshape(B, T, n_head, D).transpose(0, 2, 1, 3)

    q, k, v = heads(x @ w_query.T), heads(x @ w_key.T), heads(x @ w_value.T)
    scores = q @ k.transpose(0, 1, 3, 2) * (1.0 / math.sqrt(D))  # (B, H, T, T)
    scores[..., np.triu(np.ones((T, T), dtype=bool), k=1)] = -np.inf  # the future
    weights = softmax(scores)                                   # 0 on the future
    joined = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    out, proj_cache = linear_forward(joined, w_proj, b_proj)
    return out, (x, q, k, v, weights, proj_cache, w_query, w_key, w_value)


def causal_attention_backward(dy: np.ndarray, cache):
    """The forward pass read backwards. Returns dx and the gradients of the four matrices
    and the projection's bias.

    The masked scores need nothing special: their weights are 0, and so is p_i in the
    softmax's backward.
    """
    x, q, k, v, weights, proj_cache, w_query, w_key, w_value = cache
    B, H, T, D = q.shape
    djoined, dw_proj, db_proj = linear_backward(dy, proj_cache)
    dout = djoined.reshape(B, T, H, D).transpose(0, 2, 1, 3)    # (B, H, T, D)
    dweights = dout @ v.transpose(0, 1, 3, 2)                   # out = weights @ v
    dv = weights.transpose(0, 1, 3, 2) @ dout
    dscores = softmax_backward(dweights, weights) * (1.0 / math.sqrt(D))
    dq = dscores @ k                                            # scores = q k^T / sqrt(D)
    dk = dscores.transpose(0, 1, 3, 2) @ q

    def merge(a):  # (B, H, T, D) -> (B, T, C)
        return a.transpose(0, 2, 1, 3).reshape(B, T, H * D)

    dq, dk, dv = merge(dq), merge(dk), merge(dv)
    dx = dq @ w_query + dk @ w_key + dv @ w_value               # x feeds all three
    grads = [rows(d).T @ rows(x) for d in (dq, dk, dv)]
    return dx, grads[0], grads[1], grads[2], dw_proj, db_proj


def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray):
    """The mean over every position of -log softmax(logits)[target]."""
    flat = rows(logits)
    shifted = flat - flat.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = log_probs[np.arange(len(flat)), targets.reshape(-1)]
    return -picked.mean(), (np.exp(log_probs), targets, logits.shape)


def cross_entropy_backward(cache) -> np.ndarray:
    """dlogits = (softmax(logits) - one_hot(target)) / number of positions."""
    probs, targets, shape = cache
    dlogits = probs.copy()
    dlogits[np.arange(len(dlogits)), targets.reshape(-1)] -= 1.0
    return (dlogits / len(dlogits)).reshape(shape)


# --------------------------------------------------------------------------- the model


def parameter_shapes(vocab_size: int, block_size: int, n_layer: int, n_embd: int) -> dict:
    """``gptlib.model.GPT``'s parameters: name -> shape, in its order."""
    C, V = n_embd, vocab_size
    shapes = {"token_embedding.weight": (V, C), "position_embedding.table.weight": (block_size, C)}
    for i in range(n_layer):
        b = f"blocks.{i}."
        shapes.update({
            b + "ln1.weight": (C,), b + "ln1.bias": (C,),
            b + "attn.key.weight": (C, C), b + "attn.query.weight": (C, C),
            b + "attn.value.weight": (C, C), b + "attn.proj.weight": (C, C),
            b + "attn.proj.bias": (C,),
            b + "ln2.weight": (C,), b + "ln2.bias": (C,),
            b + "ffwd.fc.weight": (4 * C, C), b + "ffwd.fc.bias": (4 * C,),
            b + "ffwd.proj.weight": (C, 4 * C), b + "ffwd.proj.bias": (C,),
        })
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,), "lm_head.weight": (V, C),
                   "lm_head.bias": (V,)})
    return shapes


class NumpyGPT:
    """The course's GPT (chapter 06) with NumPy arrays for weights. No dropout.

    ``params`` maps ``gptlib.model.GPT``'s parameter names to arrays of its shapes; the
    arrays are used as they are (not copied), so an optimizer that updates them in place
    updates the model.
    """

    def __init__(self, params: dict[str, np.ndarray], n_head: int):
        self.params = params
        self.n_head = n_head
        self.vocab_size, n_embd = params["token_embedding.weight"].shape
        self.block_size = params["position_embedding.table.weight"].shape[0]
        self.n_layer = sum(1 for name in params if name.endswith(".ln1.weight"))
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        expected = parameter_shapes(self.vocab_size, self.block_size, self.n_layer, n_embd)
        wrong = {k: v.shape for k, v in params.items() if expected.get(k) != v.shape}
        missing = sorted(set(expected) - set(params))
        if wrong or missing:
            raise ValueError(f"not a GPT's parameters: missing {missing}, wrong or unknown {wrong}")

    @classmethod
    def create(cls, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
               seed: int = 0, dtype=np.float32) -> "NumpyGPT":
        """New weights, initialised as ``gptlib.model.GPT`` initialises its own: N(0, 0.02) for
        matrices and embeddings, N(0, 0.02 / sqrt(2 n_layer)) for the two projections into
        the residual stream, zero biases, LayerNorm gains of one."""
        rng = np.random.default_rng(seed)
        params = {}
        for name, shape in parameter_shapes(vocab_size, block_size, n_layer, n_embd).items():
            if name.endswith(("ln1.weight", "ln2.weight", "ln_f.weight")):
                value = np.ones(shape)
            elif name.endswith("bias"):
                value = np.zeros(shape)
            elif name.endswith(("attn.proj.weight", "ffwd.proj.weight")):
                value = rng.normal(0.0, 0.02 / math.sqrt(2 * n_layer), shape)
            else:
                value = rng.normal(0.0, 0.02, shape)
            params[name] = value.astype(dtype)
        return cls(params, n_head)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights under ``gptlib.model.GPT``'s names (``GPT.load_state_dict`` takes them
        as tensors: ``{k: torch.from_numpy(v) for k, v in ...}``)."""
        return dict(self.params)

    def forward(self, idx: np.ndarray, targets: np.ndarray | None = None):
        """``(logits, loss, caches)``; the loss and caches are None without ``targets``."""
        p, T = self.params, idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"{T} positions, but the block size is {self.block_size}")
        tok, _ = embedding_forward(p["token_embedding.weight"], idx)
        x = tok + p["position_embedding.table.weight"][:T]
        caches = []
        for i in range(self.n_layer):
            b = f"blocks.{i}."
            h, ln1 = layernorm_forward(x, p[b + "ln1.weight"], p[b + "ln1.bias"])
            a, attn = causal_attention_forward(
                h, p[b + "attn.query.weight"], p[b + "attn.key.weight"], p[b + "attn.value.weight"],
                p[b + "attn.proj.weight"], p[b + "attn.proj.bias"], self.n_head)
            x = x + a                                                  # residual
            h, ln2 = layernorm_forward(x, p[b + "ln2.weight"], p[b + "ln2.bias"])
            f, fc = linear_forward(h, p[b + "ffwd.fc.weight"], p[b + "ffwd.fc.bias"])
            f, gelu = gelu_forward(f)
            f, proj = linear_forward(f, p[b + "ffwd.proj.weight"], p[b + "ffwd.proj.bias"])
            x = x + f                                                  # residual
            caches.append((ln1, attn, ln2, fc, gelu, proj))
        h, ln_f = layernorm_forward(x, p["ln_f.weight"], p["ln_f.bias"])
        logits, head = linear_forward(h, p["lm_head.weight"], p["lm_head.bias"])
        if targets is None:
            return logits, None, None
        loss, ce = cross_entropy_forward(logits, targets)
        return logits, loss, (idx, caches, ln_f, head, ce)

    def backward(self, caches) -> dict[str, np.ndarray]:
        """The gradient of the loss with respect to every parameter, by name."""
        idx, blocks, ln_f, head, ce = caches
        grads = {}
        dx, grads["lm_head.weight"], grads["lm_head.bias"] = linear_backward(
            cross_entropy_backward(ce), head)
        dx, grads["ln_f.weight"], grads["ln_f.bias"] = layernorm_backward(dx, ln_f)
        for i in reversed(range(self.n_layer)):
            b = f"blocks.{i}."
            ln1, attn, ln2, fc, gelu, proj = blocks[i]
            # x = x + f(ln2(x)): the gradient reaches x unchanged, plus through the branch
            df, grads[b + "ffwd.proj.weight"], grads[b + "ffwd.proj.bias"] = linear_backward(dx, proj)
            df = gelu_backward(df, gelu)
            dh, grads[b + "ffwd.fc.weight"], grads[b + "ffwd.fc.bias"] = linear_backward(df, fc)
            dh, grads[b + "ln2.weight"], grads[b + "ln2.bias"] = layernorm_backward(dh, ln2)
            dx = dx + dh
            # x = x + attn(ln1(x)): the same
            dh, dq, dk, dv, dproj, dbias = causal_attention_backward(dx, attn)
            grads[b + "attn.query.weight"], grads[b + "attn.key.weight"] = dq, dk
            grads[b + "attn.value.weight"], grads[b + "attn.proj.weight"] = dv, dproj
            grads[b + "attn.proj.bias"] = dbias
            dh, grads[b + "ln1.weight"], grads[b + "ln1.bias"] = layernorm_backward(dh, ln1)
            dx = dx + dh
        T = idx.shape[1]
        grads["token_embedding.weight"] = embedding_backward(dx, idx, self.vocab_size)
        dpos = np.zeros_like(self.params["position_embedding.table.weight"])
        dpos[:T] = dx.sum(axis=0)                # every row of the batch used the same positions
        grads["position_embedding.table.weight"] = dpos
        return {name: grads[name] for name in self.params}  # in the parameters' order

    def loss_and_grads(self, idx: np.ndarray, targets: np.ndarray):
        _, loss, caches = self.forward(idx, targets)
        return float(loss), self.backward(caches)


# --------------------------------------------------------------------------- training


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient by max_norm / norm when the norm over all of them is larger
    (in place); return the norm before clipping. As ``torch.nn.utils.clip_grad_norm_``."""
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    scale = max_norm / (norm + 1e-6)
    if scale < 1.0:
        for g in grads.values():
            g *= scale
    return norm


def adamw_update(param, grad, exp_avg, exp_avg_sq, step: int, lr: float, beta1: float,
                 beta2: float, eps: float, weight_decay: float) -> None:
    """One AdamW step of one tensor, in place, as torch's AdamW computes it (step counts from 1).

    p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """
    param *= 1.0 - lr * weight_decay                 # decoupled weight decay
    exp_avg += (1.0 - beta1) * (grad - exp_avg)      # = b1 m + (1 - b1) g
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * grad * grad
    step_size = lr / (1.0 - beta1 ** step)
    denom = np.sqrt(exp_avg_sq) / math.sqrt(1.0 - beta2 ** step) + eps
    param -= step_size * exp_avg / denom


class AdamW:
    """AdamW over a :class:`NumpyGPT`'s parameters, with weight decay on the matrices and
    embeddings only (chapter 07's two groups)."""

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3, betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.weight_decay = weight_decay
        self.exp_avg = {k: np.zeros_like(v) for k, v in params.items()}
        self.exp_avg_sq = {k: np.zeros_like(v) for k, v in params.items()}
        self.step_count = 0

    def step(self, grads: dict[str, np.ndarray], lr: float | None = None) -> None:
        self.step_count += 1
        lr = self.lr if lr is None else lr
        for name, param in self.params.items():
            decay = self.weight_decay if param.ndim >= 2 else 0.0
            adamw_update(param, grads[name], self.exp_avg[name], self.exp_avg_sq[name],
                         self.step_count, lr, *self.betas, self.eps, decay)


def learning_rate_at(step: int, learning_rate: float, min_lr: float, warmup_iters: int,
                     decay_iters: int) -> float:
    """Chapter 07's schedule: linear warmup, then a cosine from learning_rate down to min_lr."""
    if step < warmup_iters:
        return learning_rate * (step + 1) / warmup_iters
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)
