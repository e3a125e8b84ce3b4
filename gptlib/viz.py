"""Pictures used across the chapters: readable character labels, labelled heatmaps,
and interactive explorers (ipywidgets) that redraw a picture when a control moves.

The explorers' logic is plain Python: set a control's ``.value`` and the picture
(``explorer.png``, the bytes behind ``explorer.image``) is redrawn, with or
without a browser. ipywidgets is imported only when an explorer is made.
"""

from __future__ import annotations

import html
import io

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from gptlib.attention import attention_weights

# Characters that would be invisible (or break a line) as a tick label.
VISIBLE = {"\n": "\\n", " ": "␣", "\t": "\\t"}


def char_label(ch: str) -> str:
    """A character as it should appear on a plot: newline as ``\\n``, space as ``␣``."""
    return VISIBLE.get(ch, ch)


def heatmap(
    matrix,
    row_labels=None,
    col_labels=None,
    ax=None,
    title: str | None = None,
    colorbar: bool = True,
    fontsize: float | None = None,
    **imshow_kwargs,
):
    """Draw a 2-D matrix as an image, one labelled tick per row and column.

    Labels are passed through :func:`char_label`, so a list of characters can be
    given as it is. Extra keyword arguments go to ``ax.imshow`` (``cmap``, ``norm``,
    ``vmin``...). Returns the ``AxesImage``.
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().float().numpy()
    if matrix.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D matrix, got shape {matrix.shape}")
    ax = ax if ax is not None else plt.gca()
    image = ax.imshow(matrix, **{"cmap": "viridis", "interpolation": "nearest", **imshow_kwargs})
    for labels, set_ticks, set_labels, size in (
        (row_labels, ax.set_yticks, ax.set_yticklabels, matrix.shape[0]),
        (col_labels, ax.set_xticks, ax.set_xticklabels, matrix.shape[1]),
    ):
        if labels is not None:
            if len(labels) != size:
                raise ValueError(f"{len(labels)} labels for {size} rows or columns")
            set_ticks(range(size))
            set_labels([char_label(str(label)) for label in labels], fontsize=fontsize)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return image


def attention_heatmap(weights, tokens, ax=None, title: str | None = None, **kwargs):
    """Draw a ``(T, T)`` matrix of attention weights with the tokens on both axes.

    Row ``t`` is the query position (the token that looks), column ``s`` the key
    position (the token looked at); each row of causal weights sums to 1.
    """
    ax = ax if ax is not None else plt.gca()
    image = heatmap(weights, tokens, tokens, ax=ax, title=title,
                    **{"vmin": 0.0, "cmap": "magma", **kwargs})
    ax.set_xlabel("key: the token looked at")
    ax.set_ylabel("query: the token looking")
    return image


class Explorer:
    """Rows of controls above a picture; changing any control redraws the picture.

    A subclass makes its widgets, passes them to ``__init__`` as rows, and
    implements ``draw(fig)``, which draws on a fresh matplotlib ``Figure`` and
    may return a note to show above the picture. If ``draw`` raises ValueError
    (bad input, say), the message is shown instead and the last picture stays.
    """

    figsize = (7, 6)  # inches, drawn at `dpi` and shown at that many pixels per inch
    dpi = 100

    def __init__(self, rows):
        import ipywidgets as widgets

        self.message = widgets.HTML()
        width = f"{int(self.figsize[0] * self.dpi)}px"  # natural size: never stretched or blurred
        self.image = widgets.Image(format="png", layout=widgets.Layout(width=width))
        self.png = b""
        for row in rows:
            for control in row:
                control.observe(lambda change: self.update(), names="value")
        self.widget = widgets.VBox([widgets.HBox(row) for row in rows] + [self.message, self.image])
        self.update()

    def draw(self, fig: Figure) -> str | None:
        raise NotImplementedError

    def update(self) -> None:
        fig = Figure(figsize=self.figsize, layout="constrained")
        try:
            note = self.draw(fig)
        except ValueError as error:
            self.message.value = f"<span style='color:#b00'>{html.escape(str(error))}</span>"
            return
        self.message.value = html.escape(note or "")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=self.dpi)
        self.png = buffer.getvalue()
        self.image.value = self.png

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


class AttentionExplorer(Explorer):
    """Type a text, pick a layer and a head, toggle the causal mask, move the temperature.

    In the text box a line break is written ``\\n``; press Enter to redraw.

    ``scores_fn(text)`` returns the scaled query-key scores of every layer and head,
    before mask and softmax: a tensor ``(n_layer, n_head, T, T)`` for the ``T``
    characters of ``text``. It may raise ValueError for a text it cannot take
    (a character outside the vocabulary); the message is shown to the learner.
    """

    def __init__(
        self,
        scores_fn,
        text: str,
        n_layer: int = 1,
        n_head: int = 1,
        block_size: int | None = None,
        causal: bool = True,
        temperature: float = 1.0,
    ):
        import ipywidgets as widgets

        self.scores_fn = scores_fn
        self.block_size = block_size
        # A one-line text box cannot hold a line break, so it shows and takes one as \n
        # (the corpus has no backslashes, so nothing else is changed by this).
        self.text = widgets.Text(value=text.replace("\n", "\\n"), description="text",
                                 continuous_update=False, layout=widgets.Layout(width="640px"))
        self.layer = widgets.Dropdown(options=list(range(n_layer)), description="layer",
                                      layout=widgets.Layout(width="160px"))
        self.head = widgets.Dropdown(options=list(range(n_head)), description="head",
                                     layout=widgets.Layout(width="160px"))
        self.causal = widgets.Checkbox(value=causal, description="causal mask")
        self.temperature = widgets.FloatLogSlider(value=temperature, base=10, min=-1, max=1,
                                                  step=0.05, description="temperature",
                                                  style={"description_width": "initial"})
        super().__init__([[self.text], [self.layer, self.head, self.causal, self.temperature]])

    def weights(self):
        """The text actually shown and its ``(T, T)`` attention weights for the chosen controls."""
        text, note = self.text.value.replace("\\n", "\n"), None
        if not text:
            raise ValueError("Type some text to see its attention weights.")
        if self.block_size is not None and len(text) > self.block_size:
            text = text[-self.block_size:]
            note = f"Showing the last {self.block_size} characters (the model's block_size)."
        scores = self.scores_fn(text)[self.layer.value, self.head.value]
        weights = attention_weights(scores, causal=self.causal.value,
                                    temperature=self.temperature.value)
        return text, weights, note

    def draw(self, fig):
        text, weights, note = self.weights()
        ax = fig.add_subplot()
        mask = "causal" if self.causal.value else "no mask"
        attention_heatmap(weights, list(text), ax=ax, fontsize=9 if len(text) <= 32 else 6,
                          title=f"layer {self.layer.value}, head {self.head.value}, {mask}, "
                                f"temperature {self.temperature.value:.2g}")
        return note


class SoftmaxScaleExplorer(Explorer):
    """Why attention divides by sqrt(head_size): pick a head size, toggle the scale.

    Queries and keys have unit-variance entries. Left: the spread of ``q . k`` over
    many random pairs. Right: the softmax over one query's scores against
    ``n_keys`` keys, which turns one-hot when the spread is large.
    """

    figsize = (10, 3.6)

    def __init__(self, n_keys: int = 16, n_pairs: int = 4000, seed: int = 0):
        import ipywidgets as widgets

        self.n_keys, self.n_pairs, self.seed = n_keys, n_pairs, seed
        self.head_size = widgets.SelectionSlider(
            options=[2**i for i in range(11)], value=64, description="head size",
            style={"description_width": "initial"})
        self.scaled = widgets.Checkbox(value=False, description="divide by √head_size")
        super().__init__([[self.head_size, self.scaled]])

    def scores(self):
        """``(dots, row)``: q.k of ``n_pairs`` random pairs, and the first query's scores
        against the first ``n_keys`` keys."""
        d = self.head_size.value
        g = torch.Generator().manual_seed(self.seed)
        q = torch.randn(self.n_pairs, d, generator=g)
        k = torch.randn(self.n_pairs, d, generator=g)
        dots = (q * k).sum(dim=1)
        row = k[: self.n_keys] @ q[0]  # one query against n_keys keys
        if self.scaled.value:
            dots, row = dots / d**0.5, row / d**0.5
        return dots, row

    def draw(self, fig):
        dots, row = self.scores()
        left, right = fig.subplots(1, 2)
        left.hist(dots.numpy(), bins=60, color="tab:blue")
        left.set_title(f"q·k over {self.n_pairs} random pairs: variance {dots.var():.1f}")
        left.set_xlabel("q·k")
        weights = torch.softmax(row, dim=0)
        right.bar(range(self.n_keys), weights.numpy(), color="tab:orange")
        right.set_ylim(0, 1)
        right.set_title(f"softmax over {self.n_keys} keys: largest weight {weights.max():.2f}")
        right.set_xlabel("key")
        return None


class LiveLossPlot:
    """A loss plot that redraws in place while training runs in a notebook.

    Pass it as ``on_eval`` to :func:`gptlib.train.train`: at every evaluation it
    draws the loss of every step so far and the train and validation estimates.
    ``references`` maps a label to a horizontal line (a baseline loss, say);
    ``start``, the estimates before the first step (``gptlib.train.estimate_losses``),
    is drawn at step 0, so that the curves start where the model started.
    """

    def __init__(self, max_iters: int, references: dict | None = None, figsize=(9, 4),
                 start: dict | None = None):
        self.max_iters = max_iters
        self.references = references or {}
        self.start = start
        from IPython.display import display

        self.figure = Figure(figsize=figsize, layout="constrained")
        self.ax = self.figure.add_subplot()
        self.draw({"step": [], "loss": [], "eval_step": [], "train_loss": [], "val_loss": []})
        # Shown at once, above the progress bar, and redrawn in place from then on.
        self.handle = display(self.figure, display_id=True)

    def draw(self, history: dict) -> None:
        ax = self.ax
        ax.clear()
        at = list(history["eval_step"])
        estimates = {name: list(history[name]) for name in ("train_loss", "val_loss")}
        if self.start is not None:  # the untrained model's estimates, at step 0
            at = [0] + at
            estimates = {name: [self.start[name]] + values for name, values in estimates.items()}
        ax.plot(history["step"], history["loss"], color="tab:blue", alpha=0.3, linewidth=0.7,
                label="train (one batch)")
        ax.plot(at, estimates["train_loss"], "o-", color="tab:blue", label="train (estimate)")
        ax.plot(at, estimates["val_loss"], "o-", color="tab:orange", label="validation (estimate)")
        for (label, value), color in zip(self.references.items(), ["grey", "tab:green", "tab:red"]):
            ax.axhline(value, linestyle="--", color=color, linewidth=1, label=label)
        ax.set_xlim(0, self.max_iters)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(loc="center right")  # below the uniform-guess line, above the late curves
        if history["val_loss"]:
            ax.set_title(f"step {history['eval_step'][-1]}: validation {history['val_loss'][-1]:.3f}")

    def __call__(self, step: int, history: dict) -> None:
        self.draw(history)
        if self.handle is not None:  # None outside IPython
            self.handle.update(self.figure)


def character_losses(text: str, losses, ax=None, width: int = 64, vmax: float | None = None,
                     cmap: str = "Reds"):
    """``text`` drawn character by character, each on a square coloured by its loss.

    ``losses[i]`` is the loss (nats) of predicting ``text[i]``; ``None`` or NaN leaves
    a character uncoloured (the first one has no prediction). A line break starts a
    new row (drawn as ``\\n``); lines longer than ``width`` wrap.
    """
    losses = [float("nan") if v is None else float(v) for v in losses]
    if len(losses) != len(text):
        raise ValueError(f"{len(text)} characters but {len(losses)} losses")
    cells, row, col = [], 0, 0  # (row, column, character, loss)
    for ch, loss in zip(text, losses):
        if col == width:
            row, col = row + 1, 0
        cells.append((row, col, ch, loss))
        col += 1
        if ch == "\n":
            row, col = row + 1, 0
    rows = row + 1
    if ax is None:
        widest = max(c[1] for c in cells) + 1
        _, ax = plt.subplots(figsize=(widest * 0.17 + 1.2, rows * 0.3 + 0.4))
        width = widest
    finite = [c[3] for c in cells if c[3] == c[3]]
    top = vmax or (max(finite) if finite else 1.0)
    colours = plt.get_cmap(cmap)
    for r, c, ch, loss in cells:
        if loss == loss:  # not NaN
            ax.add_patch(plt.Rectangle((c, r), 1, 1, color=colours(min(loss / top, 1.0))))
        dark = loss == loss and loss / top > 0.6
        ax.text(c + 0.5, r + 0.55, char_label(ch), ha="center", va="center", fontsize=8,
                family="monospace", color="white" if dark else "black")
    ax.set_xlim(0, width)
    ax.set_ylim(rows, 0)
    ax.set_axis_off()
    mappable = plt.cm.ScalarMappable(cmap=colours, norm=plt.Normalize(0, top))
    ax.figure.colorbar(mappable, ax=ax, fraction=0.02, pad=0.01, label="loss (nats)")
    return ax


TOKEN_COLOURS = ["#fde2a7", "#b9e4c9", "#c6d8ff", "#f7c6d9", "#e0d4f7"]


class TokenView:
    """A text cut into tokens, each on a background of its own colour (chapter 11).

    A notebook shows it as HTML (``_repr_html_``); a space is drawn as ``·`` and a
    line break as ``↵`` so that tokens made of whitespace can be seen.
    """

    def __init__(self, pieces):
        self.pieces = list(pieces)

    def _repr_html_(self) -> str:
        spans = []
        for i, piece in enumerate(self.pieces):
            shown = html.escape(piece).replace(" ", "·").replace("\n", "↵<br>")
            spans.append(f'<span style="background:{TOKEN_COLOURS[i % len(TOKEN_COLOURS)]};'
                         f'color:#000;padding:1px 0;margin-right:1px">{shown}</span>')
        return ('<div style="font-family:monospace;line-height:1.9;white-space:pre-wrap">'
                + "".join(spans) + "</div>")

    def __repr__(self) -> str:
        return "|".join(self.pieces)


def windows_diagram(n_tokens: int, block_size: int, stride: int, ax=None, title: str | None = None):
    """The (input, target) windows of :class:`gptlib.tokenizers.TokenWindows` over ``n_tokens``
    tokens: one row per window, its input cells dark and its last target cell light."""
    count = max(0, (n_tokens - block_size - 1) // stride + 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(n_tokens * 0.3 + 1, count * 0.3 + 0.8))
    for row in range(count):
        start = row * stride
        ax.add_patch(plt.Rectangle((start, row), block_size, 0.8, color="#4c72b0"))
        ax.add_patch(plt.Rectangle((start + block_size, row), 1, 0.8, color="#a6c8ff"))
    ax.set_xlim(0, n_tokens)
    ax.set_ylim(count, -0.2)
    ax.set_xticks(range(0, n_tokens + 1, max(1, n_tokens // 10)))
    ax.set_yticks([r + 0.4 for r in range(count)], [f"window {r}" for r in range(count)])
    ax.set_xlabel("token position")
    ax.set_title(title or f"block_size {block_size}, stride {stride}: {count} windows")
    return ax
