"""Diagrams of the GPT and its parts, drawn by code from the library's own objects.

Every number on these pictures (a tensor's shape, a parameter count, a rotated vector)
is computed by building or running the module it describes, so a picture cannot drift
away from the code: change ``gptlib.model`` and the diagram changes with it.

- :func:`gpt_diagram`: the whole GPT and one block, with shapes and parameter counts (chapter 06)
- :func:`attention_shapes_diagram`: multi-head attention, shape by shape (chapter 03)
- :func:`kv_cache_diagram`: what the KV cache reuses for the next token (chapter 08)
- :func:`rope_diagram`: rotary positions in 2-D: the same offset gives the same score (chapter 05)

Each returns a matplotlib ``Figure`` made without pyplot, so a notebook shows it once (as
the cell's value) and nothing stays open in pyplot's list of figures. The helpers that
compute the numbers (:func:`parameter_shares`, :func:`gpt_shapes`, :func:`attention_shapes`,
:func:`kv_cache_shapes`, :func:`rope_rotate`) can be called on their own.
"""

from __future__ import annotations

import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Arc, Circle, FancyBboxPatch, Polygon, Rectangle

from gptlib.attention import MultiHeadAttention, attention_scores, attention_weights
from gptlib.model import GPT, GPTConfig
from gptlib.positional import RotaryEmbedding

# One small palette for every diagram: a colour per part of the model...
PART_COLOURS = {
    "embeddings": "#fde2a7",
    "attention": "#c6d8ff",
    "feed-forward": "#b9e4c9",
    "LayerNorms": "#e0d4f7",
    "head": "#f7c6d9",
}
# ...and one per role in attention: queries, keys.
QUERY, KEY = "#e07b39", "#3b6fb6"
CACHED, NEW = "#c6d8ff", "#fdc998"  # KV cache: read from the cache, computed this step
EDGE, SHAPE_TEXT = "#333333", "#444444"
FONT = 10


# --- drawing helpers: every diagram is drawn in inches on one axes -----------


def _canvas(width: float, height: float):
    """A figure whose single, invisible axes measures in inches: (0, 0) is its bottom left."""
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def _box(ax, x, y, w, h, text, colour):
    """A rounded box centred on (x, y) with ``text`` in it."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.06",
                                facecolor=colour, edgecolor=EDGE, linewidth=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=FONT)


def _arrow(ax, start, end, colour=EDGE, **kwargs):
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.2, shrinkA=0, shrinkB=0, **kwargs))


def _plus(ax, x, y, r=0.14):
    """The ⊕ where a residual connection adds its input back."""
    ax.add_patch(Circle((x, y), r, facecolor="white", edgecolor=EDGE, linewidth=1.2))
    ax.text(x, y, "+", ha="center", va="center", fontsize=12)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _with_batch(shape) -> str:
    """A traced shape with its batch dimension written as B: (1, 32, 128) -> "(B, 32, 128)"."""
    return "(" + ", ".join(["B", *map(str, shape[1:])]) + ")"


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _trace(modules: dict, run) -> dict[str, torch.Tensor]:
    """Call ``run()`` and keep what each named module returns (forward hooks): name -> tensor."""
    outputs = {}

    def recorder(name):
        def hook(module, inputs, output):
            outputs[name] = output
        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, module in modules.items()]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(make):
    """``make()``, a module with random weights, without moving the caller's random numbers:
    a notebook's seeded cells draw the same numbers whether or not a diagram was drawn."""
    with torch.random.fork_rng(devices=[]):
        return make()


# --- chapter 06: the whole GPT ------------------------------------------------

PARTS = tuple(PART_COLOURS)


def _part_of(name: str) -> str:
    """The part of the GPT that a parameter belongs to, from its name in ``named_parameters()``."""
    if name.startswith(("token_embedding.", "position_embedding.")):
        return "embeddings"
    if name.startswith("lm_head."):
        return "head"
    if name.startswith("ln_f.") or ".ln1." in name or ".ln2." in name:
        return "LayerNorms"
    if ".attn." in name:
        return "attention"
    if ".ffwd." in name:
        return "feed-forward"
    raise ValueError(f"no part of the diagram holds the parameter {name!r}")


def parameter_shares(config: GPTConfig) -> dict[str, int]:
    """The parameters of ``GPT(config)`` by part: embeddings, attention, feed-forward,
    LayerNorms, head (all blocks together). They add up to ``num_parameters()``."""
    return _shares(_build(lambda: GPT(config)))


def _shares(model: GPT) -> dict[str, int]:
    counts = dict.fromkeys(PARTS, 0)
    # named_parameters() lists a shared tensor once, as num_parameters() counts it: a tied
    # head's weight is the token embedding's, so it is counted under "embeddings".
    for name, param in model.named_parameters():
        counts[_part_of(name)] += param.numel()
    return counts


def gpt_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor in ``GPT(config)``'s forward pass over a batch of one sequence of
    ``block_size`` tokens, recorded by forward hooks (a block's shapes are those of the first)."""
    return _shapes(_build(lambda: GPT(config)))


def _shapes(model: GPT) -> dict[str, tuple[int, ...]]:
    block = model.blocks[0]
    idx = torch.zeros(1, model.config.block_size, dtype=torch.long)
    watched = {
        "token embedding": model.token_embedding, "embeddings": model.position_embedding,
        "ln1": block.ln1, "attention": block.attn, "ln2": block.ln2,
        "feed-forward hidden": block.ffwd.fc, "feed-forward": block.ffwd, "block": block,
        "ln_f": model.ln_f, "logits": model.lm_head,
    }
    model.eval()  # no dropout: it would draw random numbers, and shapes do not need it
    with torch.no_grad():
        outputs = _trace(watched, lambda: model(idx))
    return {"tokens": tuple(idx.shape), **{name: tuple(out.shape) for name, out in outputs.items()}}


def _block_cards(ax, x, y, w, h, n, text):
    """``n`` stacked cards (at most 4 drawn), the front one centred on (x, y), ``text`` on it."""
    step = 0.05
    for i in reversed(range(min(n, 4))):
        ax.add_patch(FancyBboxPatch((x - w / 2 + i * step, y - h / 2 + i * step), w, h,
                                    boxstyle="round,pad=0,rounding_size=0.06", facecolor="#f3f3f3",
                                    edgecolor=EDGE, linewidth=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=FONT)


def _shape_label(ax, x, y, text, ha="left"):
    dx = 0.1 if ha == "left" else -0.1
    ax.text(x + dx, y, text, ha=ha, va="center", fontsize=FONT, color=SHAPE_TEXT)


def gpt_diagram(config: GPTConfig) -> Figure:
    """Chapter 06: the GPT as a flow from token ids to logits (left) and one transformer block
    expanded (right), each arrow labelled with its tensor's shape and each part with its
    parameter count and share of ``num_parameters()``, all computed from ``GPT(config)``."""
    model = _build(lambda: GPT(config))  # random weights: counts and shapes are all this needs
    shapes, shares = _shapes(model), _shares(model)
    total = sum(shares.values())
    C, V, T, L = config.n_embd, config.vocab_size, config.block_size, config.n_layer
    block = model.blocks[0]
    fig, ax = _canvas(10, 8.6)
    ax.text(0.2, 8.35, f"A GPT of {L} blocks: n_embd = {C}, n_head = {config.n_head}, "
            f"vocab_size = {V}, block_size = {T}.   B: the batch size", fontsize=11, weight="bold")

    # Left: the whole model, top to bottom.
    cx = 2.45
    # The position embedding reads where each token is, not which token it is; the library's
    # module adds its vectors to the token embeddings (the ⊕ below).
    ax.text(1.35, 7.85, f"token ids {_with_batch(shapes['tokens'])}", ha="center", va="center", fontsize=FONT)
    ax.text(3.55, 7.85, f"positions 0 … {T - 1}", ha="center", va="center", fontsize=FONT)
    _arrow(ax, (1.35, 7.7), (1.35, 7.45))
    _arrow(ax, (3.55, 7.7), (3.55, 7.45))
    token = _count(model.token_embedding)
    position = _count(model.position_embedding)
    _box(ax, 1.35, 7.1, 2.1, 0.7, f"token embedding\n{V} × {C} = {token:,}", PART_COLOURS["embeddings"])
    _box(ax, 3.55, 7.1, 2.1, 0.7, f"position embedding\n{T} × {C} = {position:,}",
         PART_COLOURS["embeddings"])
    _plus(ax, cx, 6.4)
    _arrow(ax, (1.35, 6.75), (cx - 0.12, 6.47))
    _arrow(ax, (3.55, 6.75), (cx + 0.12, 6.47))
    _arrow(ax, (cx, 6.26), (cx, 5.7))
    _shape_label(ax, cx, 6.02, _with_batch(shapes["embeddings"]))
    per_block = _count(block)
    _block_cards(ax, cx, 5.25, 2.6, 0.9, L,
                 f"transformer block × {L}\n{per_block:,} parameters each")
    _arrow(ax, (cx, 4.8), (cx, 4.35))
    _shape_label(ax, cx, 4.58, _with_batch(shapes["block"]))
    _box(ax, cx, 4.1, 2.6, 0.5, f"final LayerNorm: {_count(model.ln_f):,}", PART_COLOURS["LayerNorms"])
    _arrow(ax, (cx, 3.85), (cx, 3.45))
    _shape_label(ax, cx, 3.65, _with_batch(shapes["ln_f"]))
    if config.tied_head:
        head_text = f"linear head {C} → {V}\ntied: the token embedding's weight"
    else:
        head_text = f"linear head {C} → {V}\n{_count(model.lm_head):,} parameters"
    _box(ax, cx, 3.15, 2.6, 0.6, head_text, PART_COLOURS["head"])
    _arrow(ax, (cx, 2.85), (cx, 2.5))
    ax.text(cx, 2.35, f"logits {_with_batch(shapes['logits'])}", ha="center", va="center", fontsize=FONT)

    _parameter_table(ax, 0.3, 1.95, shares, total, config.tied_head)
    _expanded_block(ax, config, block, shapes)
    # Dashed lines from the stack of blocks to the block drawn large.
    for y_from, y_to in ((5.7, 7.85), (4.8, 0.55)):
        ax.plot([cx + 1.37, 5.15], [y_from, y_to], color="#999999", linestyle="--", linewidth=1)
    return fig


def _parameter_table(ax, x, y, shares, total, tied):
    """Each part's parameter count and share of the total, one row per part."""
    ax.text(x, y, "parameters by part (whole model)", fontsize=FONT, weight="bold", va="center")
    for i, part in enumerate(PARTS):
        row = y - 0.27 * (i + 1)
        ax.add_patch(Rectangle((x, row - 0.09), 0.25, 0.18, facecolor=PART_COLOURS[part], edgecolor=EDGE))
        name = "head (tied)" if part == "head" and tied else part
        share = 100 * shares[part] / total
        ax.text(x + 0.35, row, name, fontsize=FONT, va="center")
        ax.text(x + 2.85, row, f"{shares[part]:,}", fontsize=FONT, va="center", ha="right")
        ax.text(x + 3.75, row, "<0.1%" if 0 < share < 0.05 else f"{share:.1f}%", fontsize=FONT, va="center",
                ha="right")
    row = y - 0.27 * (len(PARTS) + 1)
    ax.plot([x, x + 3.75], [row + 0.15, row + 0.15], color=EDGE, linewidth=0.8)
    ax.text(x + 0.35, row, "num_parameters()", fontsize=FONT, va="center")
    ax.text(x + 2.85, row, f"{total:,}", fontsize=FONT, va="center", ha="right")
    ax.text(x + 3.75, row, "100%", fontsize=FONT, va="center", ha="right")


def _expanded_block(ax, config, block, shapes):
    """One transformer block: x + attention(LayerNorm(x)), then x + feed-forward(LayerNorm(x))."""
    C, cx, w, side = config.n_embd, 7.3, 2.9, 9.2  # side: where the residual lines run
    ax.add_patch(FancyBboxPatch((5.15, 0.55), 4.5, 7.3, boxstyle="round,pad=0,rounding_size=0.1",
                                facecolor="#fafafa", edgecolor="#999999", linestyle="--"))
    ax.text(cx, 7.6, "one transformer block", ha="center", va="center", fontsize=FONT, weight="bold")
    ax.text(cx, 7.25, f"x {_with_batch(shapes['embeddings'])}", ha="center", va="center", fontsize=FONT)
    _arrow(ax, (cx, 7.1), (cx, 6.85))
    _residual(ax, cx, 6.98, 5.1, side)
    _box(ax, cx, 6.65, w, 0.4, f"LayerNorm: {_count(block.ln1):,}", PART_COLOURS["LayerNorms"])
    _arrow(ax, (cx, 6.45), (cx, 6.2))
    _box(ax, cx, 5.9, w, 0.6,
         f"multi-head attention, {config.n_head} heads\n{_count(block.attn):,} parameters",
         PART_COLOURS["attention"])
    _arrow(ax, (cx, 5.6), (cx, 5.24))
    _shape_label(ax, cx, 5.42, _with_batch(shapes["attention"]), ha="right")
    _plus(ax, cx, 5.1)
    _arrow(ax, (cx, 4.96), (cx, 4.6))
    _shape_label(ax, cx, 4.78, _with_batch(shapes["ln2"]), ha="right")
    _residual(ax, cx, 4.78, 1.3, side)
    _box(ax, cx, 4.4, w, 0.4, f"LayerNorm: {_count(block.ln2):,}", PART_COLOURS["LayerNorms"])
    _arrow(ax, (cx, 4.2), (cx, 3.95))
    # The feed-forward network: a box of three steps.
    ffwd = block.ffwd
    ax.add_patch(FancyBboxPatch((cx - w / 2, 1.75), w, 2.2, boxstyle="round,pad=0,rounding_size=0.06",
                                facecolor=PART_COLOURS["feed-forward"], edgecolor=EDGE))
    ax.text(cx, 3.72, f"feed-forward: {_count(ffwd):,} parameters", ha="center", va="center", fontsize=FONT)
    _box(ax, cx, 3.3, 2.3, 0.36, f"Linear {C} → {4 * C}: {_count(ffwd.fc):,}", "white")
    _arrow(ax, (cx, 3.12), (cx, 2.83))
    _shape_label(ax, cx, 2.97, _with_batch(shapes["feed-forward hidden"]), ha="right")
    _box(ax, cx, 2.65, 1.4, 0.36, f"GELU ({config.gelu})", "white")
    _arrow(ax, (cx, 2.47), (cx, 2.18))
    _shape_label(ax, cx, 2.32, _with_batch(shapes["feed-forward hidden"]), ha="right")
    _box(ax, cx, 2.0, 2.3, 0.36, f"Linear {4 * C} → {C}: {_count(ffwd.proj):,}", "white")
    _arrow(ax, (cx, 1.75), (cx, 1.44))
    _shape_label(ax, cx, 1.6, _with_batch(shapes["feed-forward"]), ha="right")
    _plus(ax, cx, 1.3)
    _arrow(ax, (cx, 1.16), (cx, 0.9))
    ax.text(cx, 0.75, f"x {_with_batch(shapes['block'])}", ha="center", va="center", fontsize=FONT)


def _residual(ax, cx, y_from, y_to, side):
    """A residual connection: from the main line at ``y_from``, around on the right, into a ⊕."""
    ax.plot([cx, side, side], [y_from, y_from, y_to], color=EDGE, linewidth=1.2)
    _arrow(ax, (side, y_to), (cx + 0.14, y_to))
    ax.text(side + 0.08, (y_from + y_to) / 2, "residual", rotation=90, ha="left", va="center",
            fontsize=9, color=SHAPE_TEXT)


# --- chapter 03: multi-head attention, shape by shape --------------------------


def attention_shapes(T: int = 8, n_embd: int = 32, n_head: int = 4) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a real ``MultiHeadAttention(n_embd, n_head)`` run on one
    sequence of ``T`` positions, the batch dimension left out: a dict name -> shape."""
    attention = _build(lambda: MultiHeadAttention(n_embd, n_head, block_size=T).eval())
    x = torch.randn(1, T, n_embd, generator=torch.Generator().manual_seed(0))
    split = attention._split_heads  # (B, T, C) -> (B, n_head, T, head_size)
    watched = {"Q": attention.query, "K": attention.key, "V": attention.value, "output": attention.proj}
    concatenated = {}  # what the output projection reads: the heads side by side
    hook = attention.proj.register_forward_pre_hook(lambda m, inputs: concatenated.update(x=inputs[0]))
    try:
        with torch.no_grad():
            traced = _trace(watched, lambda: attention(x, return_weights=True))
            q, k, v = split(attention.query(x)), split(attention.key(x)), split(attention.value(x))
            scores = attention.scores(x)
            weights = attention_weights(scores)
            heads_out = weights @ v
    finally:
        hook.remove()
    shapes = {
        "x": tuple(x.shape), **{name: tuple(out.shape) for name, out in traced.items()},
        "W_q": tuple(attention.query.weight.shape), "W_k": tuple(attention.key.weight.shape),
        "W_v": tuple(attention.value.weight.shape), "W_o": tuple(attention.proj.weight.shape),
        "Q heads": tuple(q.shape), "K heads": tuple(k.shape),
        "V heads": tuple(v.shape), "scores": tuple(scores.shape), "weights": tuple(weights.shape),
        "heads out": tuple(heads_out.shape), "concatenated": tuple(concatenated["x"].shape),
    }
    # Weight matrices have no batch dimension; every activation has one, of size 1.
    return {name: shape if name.startswith("W_") else shape[1:] for name, shape in shapes.items()}


def _head_colours(n_head: int) -> list:
    palette = colormaps["Set2" if n_head <= 8 else "Set3"]  # Set3 has 12 colours, then they repeat
    return [palette(h % palette.N) for h in range(n_head)]


def _matrix(ax, x, y, w, h, colours):
    """A (rows, columns) tensor centred on (x, y), cut into equal column slices, one per colour."""
    slice_w = w / len(colours)
    for i, colour in enumerate(colours):
        ax.add_patch(Rectangle((x - w / 2 + i * slice_w, y - h / 2), slice_w, h, facecolor=colour,
                               edgecolor=EDGE, linewidth=0.6))
    ax.add_patch(Rectangle((x - w / 2, y - h / 2), w, h, fill=False, edgecolor=EDGE, linewidth=1.2))


def _stack(ax, x, y, w, h, colours, causal=False):
    """One card per head (head 0 in front, bottom left), the whole stack centred on (x, y).

    ``causal``: grey out the upper triangle of each card, the future a query may not see.
    Returns the bottom and top of the stack."""
    n = len(colours)
    step = min(0.09, 0.3 / max(n - 1, 1))  # however many heads, the stack stays small
    x0, y0 = x - (w + (n - 1) * step) / 2, y - (h + (n - 1) * step) / 2
    for i in reversed(range(n)):
        left, bottom = x0 + i * step, y0 + i * step
        ax.add_patch(Rectangle((left, bottom), w, h, facecolor=colours[i], edgecolor=EDGE, linewidth=0.8))
        if causal:
            ax.add_patch(Polygon([(left, bottom + h), (left + w, bottom + h), (left + w, bottom)],
                                 facecolor="#dddddd", edgecolor=EDGE, linewidth=0.8))
    return y0, y0 + h + (n - 1) * step


def attention_shapes_diagram(T: int = 8, n_embd: int = 32, n_head: int = 4) -> Figure:
    """Chapter 03: the shapes through multi-head attention for one sequence of ``T`` positions:
    x (T, C), then Q, K, V, the heads, scores, weights and back to (T, C). The shapes are those
    of a real :class:`gptlib.attention.MultiHeadAttention` run (see :func:`attention_shapes`)."""
    s = attention_shapes(T, n_embd, n_head)
    hs = s["Q heads"][-1]
    colours = _head_colours(n_head)
    fig, ax = _canvas(10, 8.0)
    ax.text(0.2, 7.75, "Multi-head attention, shape by shape", fontsize=11, weight="bold")
    ax.text(0.2, 7.45, f"T = {T} positions, C = n_embd = {n_embd}, n_head = {n_head}, "
            f"head_size = C / n_head = {hs}.  One sequence: the batch dimension is left out.", fontsize=FONT)
    # Drawn lengths: channels across (C, or a head's share of them); positions (T) across or
    # down, between 0.3 and 0.6 inch, so that short and long sequences both stay readable.
    c_len = 1.6
    t_len = min(max(c_len * T / n_embd, 0.3), 0.6)
    h_len = c_len / n_head
    columns = {"Q": 1.5, "K": 4.1, "V": 6.7}

    def label(x, y, lines, va="top"):
        ax.text(x, y, lines, ha="center", va=va, fontsize=FONT, linespacing=1.3)

    _head_legend(ax, 0.2, 6.85, colours)
    # x, and the three linear maps that read it.
    _matrix(ax, columns["K"], 6.85, c_len, t_len, ["#eeeeee"])
    ax.text(columns["K"] + c_len / 2 + 0.15, 6.85, f"x: (T, C) = {_shape(s['x'])}", va="center",
            fontsize=FONT)
    heads_bottom = 0.0
    for name, x in columns.items():
        weight = s["W_" + name.lower()]
        _arrow(ax, (columns["K"], 6.85 - t_len / 2), (x, 6.2))
        _box(ax, x, 5.95, 1.5, 0.5, f"W_{name.lower()} (C × C)\n{_shape(weight)}", "white")
        _arrow(ax, (x, 5.7), (x, 5.15 + t_len / 2))
        # Q, K and V: one (T, C) block each, its columns coloured by the head that owns them.
        _matrix(ax, x, 5.15, c_len, t_len, colours)
        label(x, 5.05 - t_len / 2, f"{name}: (T, C) = {_shape(s[name])}")
        # Split into heads: head h takes columns h·head_size .. (h+1)·head_size - 1.
        _arrow(ax, (x, 4.45), (x, 4.05))
        bottom, _ = _stack(ax, x, 3.6, h_len, t_len, colours)
        label(x, bottom - 0.1, f"{name} heads: (n_head, T, head_size)\n= {_shape(s[name + ' heads'])}")
        heads_bottom = bottom - 0.6
    ax.text(columns["Q"] + 0.12, 4.25, f"split into {n_head} heads", va="center", fontsize=9,
            color=SHAPE_TEXT)

    # Per head: scores, softmax, weights, and the weighted sum of the values.
    y = 1.55
    scores_x, weights_x, out_x = (columns["Q"] + columns["K"]) / 2, 4.95, columns["V"]
    _arrow(ax, (columns["Q"], heads_bottom), (scores_x - 0.2, y + 0.55))
    _arrow(ax, (columns["K"], heads_bottom), (scores_x + 0.2, y + 0.55))
    bottom, _ = _stack(ax, scores_x, y, t_len, t_len, colours)
    label(scores_x, bottom - 0.1, f"scores Q Kᵀ / √{hs}\n(n_head, T, T)\n= {_shape(s['scores'])}")
    _arrow(ax, (scores_x + 0.55, y), (weights_x - 0.55, y))
    ax.text((scores_x + weights_x) / 2, y + 0.12, "mask, softmax", ha="center", fontsize=9, color=SHAPE_TEXT)
    _stack(ax, weights_x, y, t_len, t_len, colours, causal=True)
    label(weights_x, bottom - 0.1, f"weights (masked)\n(n_head, T, T)\n= {_shape(s['weights'])}")
    _arrow(ax, (out_x, heads_bottom), (out_x, y + 0.55))
    _arrow(ax, (weights_x + 0.55, y), (out_x - 0.45, y))
    ax.text((weights_x + out_x) / 2 - 0.05, y + 0.12, "@ V", ha="center", fontsize=9, color=SHAPE_TEXT)
    _stack(ax, out_x, y, h_len, t_len, colours)
    label(out_x, bottom - 0.1, f"weights @ V\n(n_head, T, head_size)\n= {_shape(s['heads out'])}")

    # Concatenate the heads side by side again, then the output projection.
    end_x = 8.85
    _arrow(ax, (out_x + 0.45, y), (end_x - c_len / 2 - 0.05, y))
    ax.text((out_x + end_x - c_len / 2) / 2, y + 0.12, "concat", ha="center", fontsize=9, color=SHAPE_TEXT)
    _matrix(ax, end_x, y, c_len, t_len, colours)
    label(end_x, y - t_len / 2 - 0.1, f"heads side by side\n(T, C)\n= {_shape(s['concatenated'])}")
    _arrow(ax, (end_x, y + t_len / 2), (end_x, 3.3))
    _box(ax, end_x, 3.6, 1.5, 0.6, f"W_o (C × C)\n{_shape(s['W_o'])}", "white")
    _arrow(ax, (end_x, 3.9), (end_x, 5.15 - t_len / 2))
    _matrix(ax, end_x, 5.15, c_len, t_len, ["#eeeeee"])
    label(end_x, 5.25 + t_len / 2, f"output: (T, C) = {_shape(s['output'])}", va="bottom")
    return fig


def _head_legend(ax, x, y, colours):
    """A row of numbered squares: which colour is which head."""
    ax.text(x, y, "heads:", va="center", fontsize=FONT)
    spacing = min(0.3, 2.4 / len(colours))  # the row stays left of x, however many heads
    for h, colour in enumerate(colours):
        left = x + 0.62 + spacing * h
        ax.add_patch(Rectangle((left, y - 0.12), 0.8 * spacing, 0.24, facecolor=colour, edgecolor=EDGE,
                               linewidth=0.6))
        if spacing >= 0.25:
            ax.text(left + 0.4 * spacing, y, str(h), ha="center", va="center", fontsize=9)
        elif h in (0, len(colours) - 1):  # too narrow to write in: the first and last, below
            ax.text(left + 0.4 * spacing, y - 0.27, str(h), ha="center", va="center", fontsize=9)


# --- chapter 08: the KV cache ------------------------------------------------


def kv_cache_shapes(n_cached: int = 6, n_layer: int = 2, n_head: int = 4, n_embd: int = 128) -> dict:
    """What one generation step with the library's KV cache reads, computes and stores.

    A small GPT (random weights: only shapes matter here) reads ``n_cached`` tokens into a
    fresh cache, as :func:`gptlib.sample.stream` does, then one new token. Returns lists with
    one entry per layer: the shapes of ``cache.keys`` and ``cache.values`` before and after
    that step, of the new token's query (its key and value have the same shape), of its
    scores against every key, and how many positions each layer computes keys for in that
    step with the cache and, for the same step, without it.
    """
    config = GPTConfig(vocab_size=16, block_size=n_cached + 1, n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, dropout=0.0)
    model = _build(lambda: GPT(config).eval())
    idx = torch.zeros(1, n_cached + 1, dtype=torch.long)
    queries = {i: block.attn.query for i, block in enumerate(model.blocks)}
    keys = {i: block.attn.key for i, block in enumerate(model.blocks)}
    with torch.no_grad():
        cache = model.new_cache()
        model(idx[:, :n_cached], cache=cache)  # the tokens already read
        before = [tuple(k.shape) for k in cache.keys], [tuple(v.shape) for v in cache.values]
        step = _trace({**{("q", i): m for i, m in queries.items()}, **{("k", i): m for i, m in keys.items()}},
                      lambda: model(idx[:, n_cached:], cache=cache))  # the new token alone
        without = _trace(keys, lambda: model(idx))  # the same step without a cache
        new_q = [model.blocks[i].attn._split_heads(step["q", i]) for i in range(n_layer)]
        scores = [attention_scores(new_q[i], cache.keys[i]) for i in range(n_layer)]
    return {
        "keys before": before[0], "values before": before[1],
        "keys after": [tuple(k.shape) for k in cache.keys],
        "values after": [tuple(v.shape) for v in cache.values],
        "new query": [tuple(q.shape) for q in new_q],
        "scores": [tuple(s.shape) for s in scores],
        "positions with cache": [step["k", i].shape[1] for i in range(n_layer)],
        "positions without cache": [without[i].shape[1] for i in range(n_layer)],
    }


def kv_cache_diagram(n_cached: int = 6, n_layer: int = 2, n_head: int = 4, n_embd: int = 128) -> Figure:
    """Chapter 08: one generation step with a KV cache. In every layer the keys and values of
    the ``n_cached`` positions already read come from the cache; only the new token's query,
    key and value are computed, and its query is scored against every key. Shapes are those
    of the library's :class:`gptlib.model.KVCache` (see :func:`kv_cache_shapes`)."""
    s = kv_cache_shapes(n_cached, n_layer, n_head, n_embd)
    n = n_cached + 1
    cell = min(0.42, 3.2 / n)
    x0, band = 1.3, 2.0
    height = 1.55 + band * n_layer + 1.25
    fig, ax = _canvas(10, height)
    top = height - 0.3
    ax.text(0.2, top, f"Generating with a KV cache: the step that reads token {n_cached}",
            fontsize=11, weight="bold", va="center")
    ax.text(0.2, top - 0.35, f"{n_cached} tokens already read, {_plural(n_layer, 'layer')}, {n_head} heads "
            f"of head_size {n_embd // n_head}.   B: the batch size", fontsize=FONT, va="center")
    y = top - 0.85  # the positions, over the columns
    ax.text(x0 - 0.15, y, "position", ha="right", va="center", fontsize=FONT)
    every = -(-0.3 // cell)  # narrow cells: number only every few, so the numbers never touch
    for t in range(n):
        if t == n_cached or (t % every == 0 and n_cached - t >= every):
            ax.text(x0 + (t + 0.5) * cell, y, str(t), ha="center", va="center", fontsize=9)
    for layer in range(n_layer):
        _cache_layer(ax, x0, top - 1.4 - band * layer, cell, n_cached, layer, s)
    _kv_legend_and_cost(ax, 0.2, 1.0, n, n_layer, s)
    return fig


def _cells(ax, x0, y, cell, n_cached, letter, colour_new):
    """One row of cells: positions 0 .. n_cached - 1 from the cache, the last one new."""
    for t in range(n_cached + 1):
        colour = CACHED if t < n_cached else colour_new
        ax.add_patch(Rectangle((x0 + t * cell, y - 0.18), cell, 0.36, facecolor=colour, edgecolor=EDGE,
                               linewidth=0.8))
        if cell >= 0.3:  # room for a name in the cell
            ax.text(x0 + (t + 0.5) * cell, y, f"{letter}{t}", ha="center", va="center", fontsize=9)


def _cache_layer(ax, x0, y, cell, n_cached, layer, s):
    """One layer: the new query above its row of keys and values, lines to every key it scores."""
    new_x = x0 + (n_cached + 0.5) * cell
    y_k, y_v = y - 0.95, y - 1.4
    ax.add_patch(FancyBboxPatch((0.1, y_v - 0.25), 9.8, y - y_v + 0.5,  # the layer's band
                                boxstyle="round,pad=0,rounding_size=0.08", facecolor="#f7f7f7",
                                edgecolor="#cccccc"))
    ax.text(0.2, y_k, f"layer {layer}", va="center", fontsize=FONT, weight="bold")
    ax.add_patch(Rectangle((new_x - cell / 2, y - 0.18), cell, 0.36, facecolor=NEW, edgecolor=EDGE))
    if cell >= 0.3:  # room for a name in the cell
        ax.text(new_x, y, f"q{n_cached}", ha="center", va="center", fontsize=9)
    for t in range(n_cached + 1):  # the new query reaches over every key, cached or new
        ax.plot([new_x, x0 + (t + 0.5) * cell], [y - 0.18, y_k + 0.18], color=QUERY, linewidth=1, alpha=0.8)
    _cells(ax, x0, y_k, cell, n_cached, "k", NEW)
    _cells(ax, x0, y_v, cell, n_cached, "v", NEW)
    for row_y, name in ((y, "query"), (y_k, "keys"), (y_v, "values")):
        ax.text(x0 - 0.15, row_y, name, ha="right", va="center", fontsize=9)
    right = x0 + (n_cached + 1) * cell + 0.4
    q = _with_batch(s["new query"][layer])
    ax.text(right, y, f"new token: q, k and v {q}, computed this step", va="center", fontsize=FONT)
    scores = _with_batch(s["scores"][layer])
    ax.text(right, (y + y_k) / 2, f"its scores against all {n_cached + 1} keys: {scores}",
            va="center", fontsize=FONT, color=SHAPE_TEXT)
    for row_y, kind in ((y_k, "keys"), (y_v, "values")):
        before, after = s[kind + " before"][layer], s[kind + " after"][layer]
        ax.text(right, row_y, f"cache.{kind}[{layer}]: {_with_batch(before)} read, 1 appended "
                f"→ {_with_batch(after)}", va="center", fontsize=FONT)


def _kv_legend_and_cost(ax, x, y, n, n_layer, s):
    for i, (colour, text) in enumerate(((CACHED, "read from the cache (computed in earlier steps)"),
                                        (NEW, "computed in this step, for the new token"))):
        left = x + 4.6 * i
        ax.add_patch(Rectangle((left, y - 0.12), 0.3, 0.24, facecolor=colour, edgecolor=EDGE))
        ax.text(left + 0.4, y, text, va="center", fontsize=FONT)
    without, with_cache = s["positions without cache"], s["positions with cache"]
    ax.text(x, y - 0.55, f"Without a cache, this step runs all {without[0]} positions through every layer: "
            f"{sum(without)} positions in {_plural(n_layer, 'layer')}.\n"
            f"With the cache, it runs only the new one: {with_cache[0]} position per layer, "
            f"{sum(with_cache)} in all.", va="center", fontsize=FONT, linespacing=1.4)


# --- chapter 05: rotary positions (RoPE) in 2-D ---------------------------------


def rope_rotate(vector, positions, theta: float) -> torch.Tensor:
    """A 2-D ``vector`` as :class:`gptlib.positional.RotaryEmbedding` rotates a query or key at
    each of ``positions``, turning by ``theta`` radians per position: a tensor (len(positions), 2).
    """
    if not theta > 0:
        raise ValueError(f"theta must be a positive angle, got {theta!r}")
    # RotaryEmbedding turns the pair of dimensions (2i, 2i+1) by theta_i = base^(-2i/head_size)
    # per position. With head_size 2 that is base^0 = 1 radian: too fast to draw. With
    # head_size 4 its second pair turns by base^(-1/2), which is theta when base = theta^-2.
    # So the vector goes into that pair, and comes out of the library's own rotation.
    positions = list(positions)
    rope = RotaryEmbedding(head_size=4, block_size=max(positions) + 1, base=theta ** -2)
    head = torch.zeros(max(positions) + 1, 4)
    head[:, 2:] = torch.as_tensor(vector, dtype=torch.float32)  # the vector at every position
    return rope(head)[positions, 2:]


def rope_diagram(q=(1.0, 0.25), k=(0.8, -0.45), m: int = 3, n: int = 1, theta: float = 0.25,
                 shift: int = 6) -> Figure:
    """Chapter 05: RoPE in two dimensions. A query ``q`` at position ``m`` turns by m·θ, a key
    ``k`` at position ``n`` by n·θ. Drawn for (m, n) and for both moved on by ``shift``
    positions: the offset m − n is the same, so the angle between the rotated vectors and
    their dot product (the attention score) are the same too. The rotations are the
    library's (:func:`rope_rotate`)."""
    fig = Figure(figsize=(10, 5.4), dpi=100, layout="constrained")
    axes = fig.subplots(1, 2)
    scores = []
    for ax, (pm, pn) in zip(axes, ((m, n), (m + shift, n + shift))):
        scores.append(_rope_panel(ax, q, k, pm, pn, theta))
    axes[0].text(-1.38, 1.38, "faint: q and k as the linear maps give them\nsolid: turned by their positions",
                 ha="left", va="top", fontsize=9, color=SHAPE_TEXT)
    fig.suptitle(f"RoPE in 2-D: the query at position m turns by m·θ, the key at position n by n·θ "
                 f"(θ = {theta:g} rad)\nSame offset m − n = {m - n}, same angle between them, same score: "
                 f"{scores[0]:.3f} and {scores[1]:.3f}", fontsize=11)
    return fig


def _rope_panel(ax, q, k, m, n, theta) -> float:
    """One pair of positions: faint originals, rotated vectors, arcs for the angles; the score."""
    q_rot, k_rot = rope_rotate(q, [m], theta)[0], rope_rotate(k, [n], theta)[0]
    for original, rotated, position, colour, name, radius in ((q, q_rot, m, QUERY, "q", 0.35),
                                                              (k, k_rot, n, KEY, "k", 0.7)):
        original = torch.as_tensor(original, dtype=torch.float32)
        _vector(ax, original, colour, alpha=0.35, gid=f"{name} original")
        _vector(ax, rotated, colour, gid=f"{name} rotated")
        start = torch.atan2(original[1], original[0]).rad2deg().item()
        ax.add_patch(Arc((0, 0), 2 * radius, 2 * radius, theta1=start,
                         theta2=start + position * theta * 180 / torch.pi, color=colour, linewidth=1.2))
        middle = torch.deg2rad(torch.tensor(start)) + position * theta / 2
        ax.text((radius + 0.12) * middle.cos(), (radius + 0.12) * middle.sin(), f"{position}θ",
                ha="center", va="center", fontsize=9, color=colour)
        # The name just past the tip, pushed sideways away from the other vector.
        other = k_rot if name == "q" else q_rot
        side = 1.0 if rotated[0] * other[1] - rotated[1] * other[0] <= 0 else -1.0
        direction = rotated / rotated.norm()
        tip = rotated + 0.18 * direction + 0.12 * side * torch.stack([-direction[1], direction[0]])
        ax.text(tip[0], tip[1], f"{name} at {position}", ha="center", va="center", fontsize=FONT,
                color=colour, weight="bold")
    score = torch.dot(q_rot, k_rot).item()
    ax.set_title(f"m = {m}, n = {n}: offset m − n = {m - n}", fontsize=FONT + 1)
    ax.text(0, -1.32, f"score = (q turned by {m}θ) · (k turned by {n}θ) = {score:.3f}", ha="center",
            va="center", fontsize=FONT)
    ax.set_xlim(-1.45, 1.45)
    ax.set_ylim(-1.45, 1.45)
    ax.set_aspect("equal")
    ax.axhline(0, color="#bbbbbb", linewidth=0.8)
    ax.axvline(0, color="#bbbbbb", linewidth=0.8)
    ax.set_xticks([-1, -0.5, 0, 0.5, 1])
    ax.set_yticks([-1, -0.5, 0, 0.5, 1])
    ax.tick_params(labelsize=9)
    return score


def _vector(ax, vector, colour, alpha=1.0, gid=None):
    """An arrow from the origin to ``vector``; ``gid`` names it, so tests can find what was drawn."""
    arrow = ax.annotate("", xy=(float(vector[0]), float(vector[1])), xytext=(0, 0),
                        arrowprops=dict(arrowstyle="-|>", color=colour, alpha=alpha, lw=2,
                                        shrinkA=0, shrinkB=0))
    arrow.set_gid(gid)
