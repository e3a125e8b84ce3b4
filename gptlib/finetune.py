"""Fine-tuning a pretrained GPT on a new task (chapter 13).

Two tasks, both derived from Tiny Shakespeare alone:

- **which play**: a speech, its ``NAME:`` line removed, labelled with the play it comes
  from (nine classes, ``gptlib.data.PLAYS``); split into train, validation and test by
  contiguous runs of speeches inside each play, so neighbours rarely straddle splits;
- **replies**: one speech and the name of the next speaker, in an instruction
  template, and the reply that follows; the loss is on the reply's characters only.

And the ways to adapt a model: a classifier head on the hidden state of the last real
token (:class:`GPTClassifier`); a linear probe, the last block, LoRA
(:class:`LoRALinear`, :func:`add_lora`, :func:`merge_lora`) or everything from scratch
(:func:`prepare`); the loop (:func:`finetune`), the measures (:func:`accuracy`,
:func:`reply_loss`), the baselines (:func:`majority_baseline`,
:func:`bag_of_characters_baseline`), and the adapter files the command line writes
(:func:`save_finetuned`, :func:`load_finetuned`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import safe_open, save_file

from gptlib.checkpoint import (
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    optimizer_moments,
    optimizer_tensors,
    read_safetensors,
)
from gptlib.data import DATA_N_CHARS, PLAYS, CharTokenizer, play_of, sha256_of, write_atomically
from gptlib.model import GPT
from gptlib.train import (
    TrainConfig,
    TrainingDiverged,
    TrainState,
    learning_rate_at,
    random_states,
    set_random_states,
)

PLAY_TITLES = [title for title, _ in PLAYS]
SPLITS = ("train", "val", "test")
METHODS = ("probe", "last-block", "lora", "scratch")
TASKS = ("play", "reply")
IGNORE = -100  # the target F.cross_entropy leaves out: prompt and padding positions

# --- the task data ----------------------------------------------------------------------

# A speech starts at the beginning of the file or after a blank line, with "NAME:" alone on a line.
_SPEAKER_LINE = re.compile(r"(?:^|\n\n)([^\n]+):\n")


@dataclass(frozen=True)
class Speech:
    speaker: str  # the NAME of its "NAME:" line
    text: str  # what is said, without the NAME line and without the newline that ends it
    start: int  # the offset of its NAME line in Tiny Shakespeare
    play: int  # its play: an index into PLAYS

    @property
    def title(self) -> str:
        return PLAY_TITLES[self.play]


def speeches(text: str) -> list[Speech]:
    """Tiny Shakespeare cut into its speeches (7,110), in file order, each with its play."""
    if len(text) != DATA_N_CHARS:
        raise ValueError(f"speeches are labelled with their plays by their offsets in Tiny "
                         f"Shakespeare ({DATA_N_CHARS:,} characters); this text has {len(text):,}")
    heads = list(_SPEAKER_LINE.finditer(text))
    found = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        start = head.start(1)
        found.append(Speech(head.group(1), text[head.end():end].rstrip("\n"), start,
                            PLAY_TITLES.index(play_of(start))))
    return found


def split_of(index: int, count: int, runs: int = 20) -> str:
    """The split of the ``index``-th of a play's ``count`` speeches.

    The play is cut into ``runs`` contiguous runs of speeches; of every ten runs, the
    ninth goes to validation, the tenth to test, the rest to training (with 20 runs:
    40-45% and 90-95% of the play validate, 45-50% and 95-100% test). So each split
    samples two parts of every play, and most neighbours of a test speech are test
    speeches too.
    """
    run = index * runs // count
    return {8: "val", 9: "test"}.get(run % 10, "train")


def play_splits(all_speeches: list[Speech]) -> dict[str, list[Speech]]:
    """The "which play" task: ``{"train": [...], "val": [...], "test": [...]}``."""
    by_play: dict[int, list[Speech]] = {}
    for speech in all_speeches:
        by_play.setdefault(speech.play, []).append(speech)
    splits: dict[str, list[Speech]] = {name: [] for name in SPLITS}
    for play_speeches in by_play.values():
        for i, speech in enumerate(play_speeches):
            splits[split_of(i, len(play_speeches))].append(speech)
    return splits


# The instruction template of the replies task. The reply ends with a blank line, the way
# every speech of the corpus ends, so a sampler knows where to stop.
REPLY_PROMPT = "{speaker} said:\n{said}\n{replier} replies:\n"
# The same question in the corpus's own layout, to see what the pretrained model knows.
PLAIN_PROMPT = "{speaker}:\n{said}\n\n{replier}:\n"
REPLY_END = "\n\n"
SAID_CHARACTERS = 40  # how much of the previous speech the prompt quotes (its end)


@dataclass(frozen=True)
class ReplyExample:
    prompt: str  # the template filled in, up to where the reply starts
    reply: str  # the reply, and REPLY_END when the whole reply fits in the window
    start: int  # the offset of the reply's speech in Tiny Shakespeare


def tail(text: str, n: int) -> str:
    """The last ``n`` characters of ``text`` or fewer, starting at a word."""
    if len(text) <= n:
        return text
    cut = text[-n:]
    if text[-n - 1].isspace():  # the cut falls between two words
        return cut
    space = re.search(r"\s", cut)
    return cut[space.end():] if space and space.end() < len(cut) else cut


def reply_prompt(speaker: str, said: str, replier: str, template: str = REPLY_PROMPT) -> str:
    return template.format(speaker=speaker, said=tail(said, SAID_CHARACTERS), replier=replier)


def reply_examples(all_speeches: list[Speech], block_size: int,
                   template: str = REPLY_PROMPT) -> list[ReplyExample]:
    """Every speech answered by another speaker of the same play, as a prompt and a reply.

    Prompt and reply together fit ``block_size + 1`` characters (the model reads all
    but the last and predicts all but the first); a reply too long for that is cut,
    and then has no end mark.
    """
    examples = []
    for previous, speech in zip(all_speeches, all_speeches[1:]):
        if previous.play != speech.play or previous.speaker == speech.speaker:
            continue
        prompt = reply_prompt(previous.speaker, previous.text, speech.speaker, template)
        room = block_size + 1 - len(prompt)
        if room < 8:
            continue  # a very long name: no room for a reply
        reply = speech.text + REPLY_END
        examples.append(ReplyExample(prompt, reply[:room], speech.start))
    return examples


def reply_splits(examples: list[ReplyExample], val_start: int) -> dict[str, list[ReplyExample]]:
    """Replies before ``val_start`` (the pretraining's validation split) train; the rest,
    text the pretrained model never read, validate."""
    return {"train": [e for e in examples if e.start < val_start],
            "val": [e for e in examples if e.start >= val_start]}


# --- batches: padding in the collate functions ------------------------------------------


def collate_texts(texts: list[str], tokenizer: CharTokenizer, block_size: int):
    """Token ids padded on the right to the longest text, and each text's length.

    A text longer than ``block_size`` keeps its last ``block_size`` tokens (its end is
    what the classifier reads). The padding id is 0, a real token: harmless, because
    with causal attention no real position reads a later (padding) one, and the
    classifier reads only the last real position. Returns ``(idx (B, T), lengths (B,))``.
    """
    encoded = [tokenizer.encode(text)[-block_size:] for text in texts]
    if any(len(ids) == 0 for ids in encoded):
        raise ValueError("an empty text cannot be classified")
    longest = max(len(ids) for ids in encoded)
    idx = torch.zeros(len(encoded), longest, dtype=torch.long)
    for row, ids in enumerate(encoded):
        idx[row, :len(ids)] = torch.tensor(ids)
    return idx, torch.tensor([len(ids) for ids in encoded])


# The blank line that ends every speech of the corpus. After it the pretrained model writes
# the next speaker's name, which depends on the play's cast: the classifier reads it there.
SPEECH_END = "\n\n"


def collate_speeches(texts: list[str], tokenizer: CharTokenizer, block_size: int):
    """:func:`collate_texts` of each speech followed by :data:`SPEECH_END`."""
    return collate_texts([text + SPEECH_END for text in texts], tokenizer, block_size)


def collate_replies(examples: list[ReplyExample], tokenizer: CharTokenizer):
    """Inputs and targets for the replies task: ``(x, y)``, both (B, T).

    ``y`` is ``x`` shifted by one, as in pretraining, but a target is IGNORE (-100)
    wherever it lies in the prompt or in the padding: the loss counts the reply's
    tokens only. Padding goes on the right of ``x`` (id 0) and of ``y`` (IGNORE).
    """
    rows = []
    for example in examples:
        prompt, reply = tokenizer.encode(example.prompt), tokenizer.encode(example.reply)
        ids = prompt + reply
        targets = [IGNORE] * (len(prompt) - 1) + reply  # position i predicts token i + 1
        rows.append((ids[:-1], targets))
    longest = max(len(x) for x, _ in rows)
    x = torch.zeros(len(rows), longest, dtype=torch.long)
    y = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
    for row, (ids, targets) in enumerate(rows):
        x[row, :len(ids)] = torch.tensor(ids)
        y[row, :len(targets)] = torch.tensor(targets)
    return x, y


# --- the classifier ---------------------------------------------------------------------


class GPTClassifier(nn.Module):
    """A GPT whose language-model head is replaced by a linear layer into ``n_classes``.

    It reads the hidden state of each text's *last real token*: with causal attention
    that is the only position that has seen the whole text (an earlier one has not
    read the end; a padding position has read padding). The task's texts end with
    :data:`SPEECH_END` (:func:`collate_speeches`).
    """

    def __init__(self, gpt: GPT, n_classes: int):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, n_classes)
        nn.init.zeros_(self.head.weight)  # it starts at "every class alike"
        nn.init.zeros_(self.head.bias)

    @property
    def block_size(self) -> int:
        return self.gpt.config.block_size

    def features(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The hidden state of each row's last real token: (B, n_embd)."""
        hidden = self.gpt.hidden_states(idx)  # (B, T, n_embd)
        return hidden[torch.arange(len(idx), device=idx.device), lengths - 1]

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor | None = None):
        """``(logits (B, n_classes), loss)``; the loss is None without ``labels``."""
        logits = self.head(self.features(idx, lengths))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return logits, loss


# --- LoRA -------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (Hu et al., 2021).

        y = W x + b + (alpha / rank) * B (A x)

    A is (rank, in) and starts random, B is (out, rank) and starts at zero, so the
    layer starts as exactly the pretrained one and training moves only A and B:
    ``rank * (in + out)`` numbers instead of ``in * out``. :meth:`merged` folds the
    update into one ordinary ``nn.Linear`` (W + alpha / rank * B A): the same outputs,
    and no extra cost at inference.
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise ValueError(f"LoRA's rank must be a positive whole number, got {rank!r}")
        if not (alpha > 0 and math.isfinite(alpha)):
            raise ValueError(f"LoRA's alpha must be a number > 0, got {alpha!r}")
        largest = min(base.in_features, base.out_features)
        if rank > largest:
            raise ValueError(f"LoRA's rank must be at most {largest}, the smaller side of the "
                             f"{base.out_features}x{base.in_features} weight it updates, got {rank}")
        self.base = base
        for param in base.parameters():
            param.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear draws its weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale

    def delta(self) -> torch.Tensor:
        """The update to the weight, (out, in), of rank at most ``rank``."""
        return (self.B @ self.A) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """One ``nn.Linear`` that computes what this layer does."""
        layer = nn.Linear(self.base.in_features, self.base.out_features,
                          bias=self.base.bias is not None, device=self.base.weight.device)
        layer.weight.copy_(self.base.weight + self.delta())
        if self.base.bias is not None:
            layer.bias.copy_(self.base.bias)
        return layer


LORA_TARGETS = ("query", "key", "value", "proj")  # the attention projections of every block


def add_lora(gpt: GPT, rank: int = 8, alpha: float = 16.0, targets=LORA_TARGETS) -> list[LoRALinear]:
    """Wrap the attention projections of every block of ``gpt`` in :class:`LoRALinear`, in place."""
    wrapped = []
    for block in gpt.blocks:
        for name in targets:
            lora = LoRALinear(getattr(block.attn, name), rank, alpha)
            setattr(block.attn, name, lora)
            wrapped.append(lora)
    return wrapped


def merge_lora(module: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` inside ``module`` by its merged ``nn.Linear``, in place."""
    for name, child in list(module.named_children()):
        if isinstance(child, LoRALinear):
            setattr(module, name, child.merged())
        else:
            merge_lora(child)
    return module


# --- the four ways to fine-tune ---------------------------------------------------------


def prepare(model: nn.Module, method: str, rank: int = 8, alpha: float = 16.0,
            seed: int = 1337) -> nn.Module:
    """Set which weights of ``model`` train, in place, and return it.

    ``model`` is a :class:`GPTClassifier` (its head always trains) or a GPT (replies).
    ``probe``: the head alone, on the frozen GPT (for a GPT: its language-model head);
    ``last-block``: the last block, the final LayerNorm and the head; ``lora``: LoRA on
    every attention projection, plus a classifier's head; ``scratch``: the same
    architecture with fresh random weights, everything trains (but a classifier's unused
    language-model head).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: pick one of {', '.join(METHODS)}")
    gpt = model.gpt if isinstance(model, GPTClassifier) else model
    if method == "scratch":
        torch.manual_seed(seed)
        fresh = GPT(gpt.config).to(next(gpt.parameters()).device)
        gpt.load_state_dict(fresh.state_dict())
        for param in model.parameters():
            param.requires_grad_(True)
        if isinstance(model, GPTClassifier):
            gpt.lm_head.requires_grad_(False)  # a classifier never uses the language-model head
        return model
    for param in model.parameters():
        param.requires_grad_(False)
    head = model.head if isinstance(model, GPTClassifier) else gpt.lm_head
    if method == "probe" or isinstance(model, GPTClassifier):
        head.requires_grad_(True)
    if method == "last-block":
        gpt.blocks[-1].requires_grad_(True)
        gpt.ln_f.requires_grad_(True)
        head.requires_grad_(True)
    elif method == "lora":
        torch.manual_seed(seed)
        add_lora(gpt, rank, alpha)
    return model


def default_config(task: str, method: str, **overrides) -> TrainConfig:
    """The settings a fine-tune starts from (the command line's defaults).

    A probe's head starts at zero and is alone, so it takes a larger step; the
    pretrained weights take smaller ones than a model learning from scratch.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: pick one of {', '.join(TASKS)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: pick one of {', '.join(METHODS)}")
    lr = {"probe": 1e-2, "last-block": 1e-3, "lora": 3e-3, "scratch": 2e-3}[method]
    settings = dict(batch_size=32, max_iters=300, learning_rate=lr, min_lr=round(lr / 10, 9), warmup_iters=20,
                    weight_decay=0.01, eval_interval=100, eval_iters=1, log_interval=10, seed=1337)
    return TrainConfig(**{**settings, **overrides})


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- training ---------------------------------------------------------------------------


def new_history() -> dict:
    return {"step": [], "loss": [], "lr": [], "eval_step": [], "val_loss": [], "val_accuracy": []}


def draw(examples: list, batch_size: int, generator: torch.Generator) -> list:
    """A batch of ``batch_size`` examples drawn at random (with replacement)."""
    rows = torch.randint(len(examples), (batch_size,), generator=generator)
    return [examples[i] for i in rows.tolist()]


def batch_loss(model, batch, tokenizer, device) -> torch.Tensor:
    """The loss of one batch: speeches (the play task) or reply examples."""
    if isinstance(model, GPTClassifier):
        idx, lengths = collate_speeches([s.text for s in batch], tokenizer, model.block_size)
        labels = torch.tensor([s.play for s in batch])
        return model(idx.to(device), lengths.to(device), labels.to(device))[1]
    x, y = collate_replies(batch, tokenizer)
    return model(x.to(device), y.to(device))[1]


def finetune(model, tokenizer, train_examples: list, val_examples: list, config: TrainConfig,
             state: TrainState | None = None, *, on_eval=None, should_stop=None,
             progress: bool = True) -> TrainState:
    """Fine-tune ``model``'s trainable weights in place until step ``config.max_iters``.

    The loop of :func:`gptlib.train.train`, on examples instead of windows: set the
    learning rate, draw a batch, forward, backward, clip, step. Every
    ``eval_interval`` steps and at the end the whole validation set (if any) is
    measured (the loss, and a classifier's accuracy) and ``on_eval(step, history)`` called;
    ``should_stop()`` ends the run early. ``state`` continues a run.
    """
    from tqdm import tqdm

    if state is None:
        state = TrainState.start(model, config)
        state.history = new_history()
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    bar = tqdm(initial=state.step, total=config.max_iters, disable=not progress, unit="step")
    try:
        for step in range(state.step, config.max_iters):
            lr = learning_rate_at(step, config)
            for group in state.optimizer.param_groups:
                group["lr"] = lr
            loss = batch_loss(model, draw(train_examples, config.batch_size, state.batches),
                              tokenizer, device)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            state.optimizer.step()
            state.step = step + 1
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(f"the loss became {value} at step {state.step}: "
                                       f"fine-tuning diverged (try a lower learning_rate)")
            for key, item in (("step", state.step), ("lr", lr), ("loss", value)):
                state.history[key].append(item)
            bar.update()
            bar.set_postfix({"loss": f"{value:.3f}"}, refresh=False)
            stop = should_stop is not None and should_stop()
            if state.step % config.eval_interval == 0 or state.step == config.max_iters:
                if val_examples:
                    measure(model, tokenizer, val_examples, state)
                    model.train()
                if on_eval is not None:
                    on_eval(state.step, state.history)
            if stop:
                break
    finally:
        bar.close()
    model.eval()
    return state


def measure(model, tokenizer, examples: list, state: TrainState) -> None:
    """Append the validation loss (and accuracy) at this step to the history."""
    if isinstance(model, GPTClassifier):
        loss, correct = classify_all(model, tokenizer, examples)
        state.history["val_accuracy"].append(correct)
    else:
        loss = reply_loss(model, tokenizer, examples)
    state.history["eval_step"].append(state.step)
    state.history["val_loss"].append(loss)


@torch.no_grad()
def predict(model: GPTClassifier, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """The class probabilities of each speech (without its NAME line): (len(texts), n_classes).

    The speeches go through in order of length, so that a batch pads little.
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs = torch.empty(len(texts), model.head.out_features)
    for i in range(0, len(texts), batch_size):
        rows = order[i:i + batch_size]
        idx, lengths = collate_speeches([texts[r] for r in rows], tokenizer, model.block_size)
        probs[rows] = model(idx.to(device), lengths.to(device))[0].softmax(-1).cpu()
    return probs


def classify_all(model: GPTClassifier, tokenizer, examples: list[Speech]) -> tuple[float, float]:
    """The mean loss and the accuracy of the classifier on ``examples``."""
    probs = predict(model, tokenizer, [s.text for s in examples])
    labels = torch.tensor([s.play for s in examples])
    loss = -probs[torch.arange(len(labels)), labels].clamp_min(1e-12).log().mean().item()
    return loss, accuracy(probs.argmax(-1), labels)


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return (predicted == labels).float().mean().item()


@torch.no_grad()
def reply_loss(model: GPT, tokenizer, examples: list[ReplyExample], batch_size: int = 64) -> float:
    """The mean loss per reply token (nats), over every reply token of ``examples``."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        x, y = collate_replies(examples[i:i + batch_size], tokenizer)
        logits, _ = model(x.to(device))
        y = y.to(device)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE,
                                 reduction="sum").item()
        count += (y != IGNORE).sum().item()
    return total / count


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``m[i, j]``: how many examples of class i were predicted as class j."""
    m = torch.zeros(n_classes, n_classes, dtype=torch.long)
    m.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    return m


# --- baselines --------------------------------------------------------------------------


def majority_baseline(train: list[Speech], test: list[Speech]) -> float:
    """The accuracy of always answering the play with the most training speeches."""
    counts = torch.bincount(torch.tensor([s.play for s in train]), minlength=len(PLAYS))
    return accuracy(torch.full((len(test),), counts.argmax().item()),
                    torch.tensor([s.play for s in test]))


def character_counts(texts: list[str], tokenizer: CharTokenizer) -> torch.Tensor:
    """Each text as the share of each character in it: (len(texts), vocab_size)."""
    counts = torch.zeros(len(texts), tokenizer.vocab_size)
    for row, text in enumerate(texts):
        counts[row] = torch.bincount(torch.tensor(tokenizer.encode(text)),
                                     minlength=tokenizer.vocab_size).float()
    return counts / counts.sum(1, keepdim=True)


def logistic_regression(features: list[torch.Tensor], labels: list[torch.Tensor],
                        steps: int = 300) -> torch.Tensor:
    """A linear classifier fitted to convergence: the test predictions.

    ``features`` and ``labels`` hold the train, validation and test sets. The
    features are standardised with the training set's statistics; L-BFGS minimises
    the cross-entropy plus an L2 penalty, whose weight is the one of three that scores
    best on the validation set.
    """
    mean, std = features[0].mean(0), features[0].std(0) + 1e-6
    xs = [(x - mean) / std for x in features]
    best = None
    for penalty in (1e-4, 1e-3, 1e-2):
        torch.manual_seed(0)
        layer = nn.Linear(xs[0].shape[1], int(labels[0].max()) + 1)
        optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(layer(xs[0]), labels[0]) + penalty * layer.weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            val_accuracy = accuracy(layer(xs[1]).argmax(-1), labels[1])
            if best is None or val_accuracy > best[0]:
                best = (val_accuracy, layer(xs[2]).argmax(-1))
    return best[1]


def bag_of_characters_baseline(train: list[Speech], val: list[Speech], test: list[Speech],
                               tokenizer: CharTokenizer, steps: int = 300):
    """A logistic regression on the share of each character in a speech (order thrown away).

    Returns ``(test accuracy, the test predictions)``.
    """
    splits = (train, val, test)
    predictions = logistic_regression([character_counts([s.text for s in split], tokenizer)
                                       for split in splits],
                                      [torch.tensor([s.play for s in split]) for split in splits], steps)
    return accuracy(predictions, torch.tensor([s.play for s in test])), predictions


@torch.no_grad()
def hidden_at_end(gpt: GPT, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """The frozen GPT's hidden state at each text's last character: (len(texts), n_embd)."""
    gpt.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), gpt.config.n_embd)
    for i in range(0, len(texts), batch_size):
        rows = order[i:i + batch_size]
        idx, lengths = collate_texts([texts[r] for r in rows], tokenizer, gpt.config.block_size)
        out[rows] = gpt.hidden_states(idx)[torch.arange(len(rows)), lengths - 1]
    return out


# --- adapter files ------------------------------------------------------------------------

FILENAME = "finetune.safetensors"
FORMAT = "gptlib-finetune-1"


def finetuned_path(path) -> Path:
    path = Path(path)
    return path if path.suffix == ".safetensors" and not path.is_dir() else path / FILENAME


def build(base: GPT, task: str, method: str, rank: int = 8, alpha: float = 16.0,
          seed: int = 1337) -> nn.Module:
    """The model a fine-tune trains: ``base`` under a classifier head (play) or alone (reply),
    prepared for ``method``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: pick one of {', '.join(TASKS)}")
    model = GPTClassifier(base, len(PLAYS)).to(next(base.parameters()).device) \
        if task == "play" else base
    return prepare(model, method, rank, alpha, seed)


def save_finetuned(path, model: nn.Module, info: dict, config: TrainConfig,
                   state: TrainState | None = None) -> Path:
    """Write the trained weights only (the "adapter"), atomically, with what rebuilds the model.

    ``info``: ``task``, ``method``, ``rank``, ``alpha`` and ``base`` (the pretrained
    checkpoint, a path). Everything else comes from the base checkpoint, so a LoRA
    fine-tune is a file of a few hundred kilobytes. With ``state`` the optimizer and
    the batch generator are saved too, so the run can resume.
    """
    path = finetuned_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    tensors = {f"weights.{k}": v.detach().cpu().contiguous()
               for k, v in model.state_dict().items() if k in trained}
    metadata = {"format": FORMAT, "info": json.dumps(info), "config": json.dumps(config.to_dict())}
    if state is not None:
        tensors.update(optimizer_tensors(state.optimizer))
        tensors["rng.batches"] = state.batches.get_state()
        tensors["rng.torch"] = random_states()["torch"]
        metadata["step"] = str(state.step)
        metadata["history"] = json.dumps(state.history)
    return write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


@dataclass
class Finetuned:
    model: nn.Module  # a GPTClassifier (play) or a GPT (reply), in eval mode
    tokenizer: CharTokenizer
    info: dict
    config: TrainConfig
    step: int
    history: dict | None
    tensors: dict  # the optimizer's and the random states, for resuming


def load_finetuned(path, base_model: GPT, tokenizer, device="cpu") -> Finetuned:
    """Rebuild a fine-tune written by :func:`save_finetuned` on ``base_model`` (changed in place)."""
    file = finetuned_path(path)
    if not file.is_file():
        raise CheckpointError(f"no fine-tune at {path} (expected the file {file})")
    metadata, tensors = read_safetensors(file, "fine-tune", device)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a gptlib fine-tune (format {metadata.get('format')!r}, "
                              f"expected {FORMAT!r})")
    try:
        info = json.loads(metadata["info"])
        config = TrainConfig.from_dict(json.loads(metadata["config"]))
        model = build(base_model.to(device), info["task"], info["method"], info["rank"], info["alpha"],
                      config.seed)
        weights = {k[len("weights."):]: v for k, v in tensors.items() if k.startswith("weights.")}
        expected = {name for name, p in model.named_parameters() if p.requires_grad}
        if set(weights) != expected:
            raise ValueError(f"it holds {len(weights)} tensors where this model trains {len(expected)}")
        model.load_state_dict(weights, strict=False)
        history = json.loads(metadata["history"]) if "history" in metadata else None
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"{file} is damaged or does not fit its base model ({error})") from None
    return Finetuned(model.eval(), tokenizer, info, config, int(metadata.get("step", 0)), history,
                     {k: v for k, v in tensors.items() if not k.startswith("weights.")})


def open_finetuned(path, device="cpu") -> Finetuned:
    """A fine-tune with its base model: the checkpoint its ``info["base"]`` names (a path
    relative to the fine-tune's folder), checked to be the very file it was trained on."""
    file = finetuned_path(path)
    if not file.is_file():
        raise CheckpointError(f"no fine-tune at {path} (expected the file {file})")
    with safe_open(file, framework="pt") as f:
        info = json.loads((f.metadata() or {}).get("info", "{}"))
    base_file = checkpoint_path(file.parent / info.get("base", "?"))
    if not base_file.is_file():
        raise CheckpointError(f"the base model of {file} is not at {base_file}, where it was")
    if info.get("base_sha256") and sha256_of(base_file) != info["base_sha256"]:
        raise CheckpointError(f"{base_file} has changed since {file} was trained on it")
    base = load_checkpoint(base_file, device=device)
    return load_finetuned(file, base.model, base.tokenizer, device)


def resume_state(finetuned: Finetuned, config: TrainConfig) -> TrainState:
    """The :class:`TrainState` a fine-tune resumes from."""
    state = TrainState.start(finetuned.model, config)
    saved = state.optimizer.state_dict()
    moments = optimizer_moments(finetuned.tensors, next(finetuned.model.parameters()).device)
    try:
        state.optimizer.load_state_dict({"state": moments, "param_groups": saved["param_groups"]})
        state.batches.set_state(finetuned.tensors["rng.batches"])
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"the fine-tune's optimizer state does not fit ({error})") from None
    set_random_states({"torch": finetuned.tensors["rng.torch"]})
    state.step = finetuned.step
    state.history = finetuned.history or new_history()
    return state


def write_reply(model: GPT, tokenizer, prompt: str, max_new_tokens: int = 200, **sampling) -> str:
    """Sample a reply to ``prompt`` (a filled-in :data:`REPLY_PROMPT`), up to its end mark.

    ``sampling``: :func:`gptlib.sample.stream_text`'s settings (temperature, top_k,
    top_p, generator).
    """
    from gptlib.sample import stream_text

    written = ""
    for piece in stream_text(model, tokenizer, prompt, max_new_tokens, **sampling):
        written += piece
        if REPLY_END in written:
            return written[:written.index(REPLY_END)]
    return written
