"""The command line: ``python -m gptlib train | sample | eval | export | presets | finetune | classify``.

``train``'s settings are made from the fields of :class:`GPTConfig` and
:class:`TrainConfig`, so every setting a config has is an option, with its type, its
default (the ``cpu`` preset's) and its meaning in ``--help``. Every mistake a user can
type ends in one line on stderr that says what is wrong, and exit status 2; nothing
is written.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import sys
import time
import typing
from dataclasses import fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

from gptlib.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from gptlib.data import CharTokenizer, DataError, load_shakespeare, sha256_of
from gptlib.evaluate import evaluate
from gptlib.model import GPT, GPTConfig
from gptlib.presets import PRESETS, get_preset
from gptlib.runtime import (
    Runtime,
    autocast_dtype,
    available_memory,
    from_environment,
    pick_device,
    training_memory,
)
from gptlib.sample import check_sampling, check_window_shift, stream_text
from gptlib.tokenizers import TokenizedText, tokenize_dataset
from gptlib.train import TrainConfig, TrainingDiverged, TrainState, check_seed

COMMANDS = ("train", "sample", "eval", "export", "presets", "finetune", "classify")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input on the command line."""


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM during training: finish the step, save, stop.

    Called by the training loop after every step, it answers whether a signal has
    come. A second signal ends the process at once; checkpoints are written
    atomically, so even that leaves the last saved one whole.
    """

    def __init__(self):
        self.signal = None

    def __call__(self) -> bool:
        return self.signal is not None

    def handle(self, signum, frame) -> None:
        if self.signal is not None:
            print("\nsecond interrupt: quitting now; the last checkpoint is intact",
                  file=sys.stderr)
            os._exit(EXIT_INTERRUPTED)
        self.signal = signal.Signals(signum).name
        print(f"\n{self.signal}: finishing this step and saving a checkpoint "
              f"(interrupt again to quit at once)", file=sys.stderr)

    @contextlib.contextmanager
    def installed(self):
        previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold ``out`` for this run: a second ``train`` on it refuses at once.

    The lock is the operating system's (flock) on the directory itself: it ends with
    the process that holds it, so a run that crashed leaves nothing stuck.
    """
    import fcntl

    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another training run is writing to {out} right now; wait for it "
                             f"to finish, or pick another --out") from None
        yield
    finally:
        os.close(fd)


# --- train ----------------------------------------------------------------------------

# The settings train takes: every field of both configs but the vocabulary (the data's).
SETTINGS = [f for f in fields(GPTConfig) if f.name != "vocab_size"] + list(fields(TrainConfig))
HINTS = {**typing.get_type_hints(GPTConfig), **typing.get_type_hints(TrainConfig)}


def add_setting(group, f, default) -> None:
    """One ``--name`` option for the config field ``f``, typed as the field is."""
    kind = HINTS[f.name]
    if kind is bool:
        group.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {default})")
        return
    kind = next(t for t in typing.get_args(kind) if t is not type(None)) if typing.get_args(kind) \
        else kind  # int | None -> int
    shown = "max_iters" if f.name == "lr_decay_iters" and default is None else default
    group.add_argument(f"--{f.name}", type=kind, default=argparse.SUPPRESS,
                       metavar=kind.__name__.upper(),
                       help=f"{f.metadata['help']} (default: {shown})")


def settings_given(args) -> dict:
    return {f.name: getattr(args, f.name) for f in SETTINGS if hasattr(args, f.name)}


def cmd_train(args) -> int:
    overrides = settings_given(args)
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pick one")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a directory for the run")
    existing = checkpoint_path(out)
    if existing.exists() and not (args.resume or args.overwrite):
        raise UsageError(f"{out} already holds a checkpoint; add --resume to continue that run, "
                         f"or --overwrite to start over and replace it")
    if args.resume and not existing.exists():
        raise UsageError(f"--resume, but there is no checkpoint in {out} to resume from")
    distributed = from_environment()
    if args.backend == "numpy":
        check_numpy_backend(args, distributed)
    device = pick_device("cpu" if args.backend == "numpy" else args.device)
    if distributed.enabled and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank)  # one GPU per process
    runtime = Runtime(device, autocast_dtype(device, args.precision), args.compile, distributed,
                      backend=args.backend)

    # Everything is checked before the data is read and before anything is written.
    return train_in(out, args, overrides, distributed, device, runtime)


def check_numpy_backend(args, distributed) -> None:
    """Chapter 10's NumPy GPT trains on the CPU, in float32, alone, without dropout."""
    refusals = [
        (args.device not in ("auto", "cpu"), f"--device {args.device}: it runs on the CPU"),
        (args.precision not in ("auto", "float32"), f"--precision {args.precision}: it computes "
                                                    f"in float32"),
        (args.compile, "--compile: there is no torch graph to compile"),
        (distributed.enabled, "several processes: it trains in one"),
    ]
    for refused, reason in refusals:
        if refused:
            raise UsageError(f"the numpy backend cannot take {reason}")


def make_run_directory(out: Path) -> list[Path]:
    """Create ``out`` and any missing parents; return the ones this call made, deepest first."""
    missing = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            out.mkdir()
        except FileExistsError:
            if not out.is_dir():
                raise
            return []  # another run made it a moment ago: it is not ours to remove
    except OSError as error:
        raise UsageError(f"cannot make the run directory {out}: {error.strerror or error}") from None
    return missing


def remove_if_empty(directories: list[Path]) -> None:
    """A run that failed before its first checkpoint leaves no directory it made behind."""
    for directory in directories:
        if not directory.is_dir() or any(directory.iterdir()):
            return
        directory.rmdir()


def train_in(out: Path, args, overrides: dict, distributed, device, runtime) -> int:
    """Hold ``out``, check the settings, read the data, and train."""
    made: list[Path] = []  # the directories this run created; removed again if it fails early
    with contextlib.ExitStack() as held:
        locked = distributed.is_main and out.is_dir()
        if locked:
            held.enter_context(run_lock(out))
        try:
            if args.resume:
                ckpt = load_checkpoint(out, device=device)
                model_config, train_config = resume_configs(ckpt, args, overrides, out)
                data_path = args.data or ckpt.data_path
            else:
                ckpt = None
                model_config, train_config = get_preset(args.preset or "cpu", **overrides)
                data_path = args.data
            if args.backend == "numpy" and model_config.dropout > 0:
                raise UsageError(f"the numpy backend has no dropout; this model has dropout "
                                 f"{model_config.dropout}: add --dropout 0")
            gpt2_switches = [name for name in ("qkv_bias", "tied_head", "head_bias", "gelu",
                                               "layernorm_eps")
                             if getattr(model_config, name) != GPTConfig.__dataclass_fields__[name].default]
            if args.backend == "numpy" and gpt2_switches:
                raise UsageError(f"the numpy backend builds the course's GPT only, without GPT-2's "
                                 f"switches ({', '.join(gpt2_switches)})")
            distributed.shard(train_config.batch_size)  # refuses a batch that does not split evenly
            check_memory(model_config, train_config.batch_size // distributed.world_size, device)
            data = read_tokens(ckpt.tokenizer if ckpt else args.tokenizer or "char", data_path,
                               f"the checkpoint in {out}")
            tokenizer = data.tokenizer
            if ckpt is not None:
                model, state = ckpt.model, ckpt.train_state(train_config)
            else:
                model_config = replace(model_config, vocab_size=tokenizer.vocab_size)
                torch.manual_seed(train_config.seed)
                model = GPT(model_config).to(device)
                state = None
            if distributed.is_main and not locked:
                made = make_run_directory(out)
                held.enter_context(run_lock(out))
                locked = True
            preset = ckpt.preset if ckpt else (args.preset or "cpu")
            return run_training(args, out, runtime, model, train_config, state, data, preset,
                                data_path)
        except BaseException:
            if locked:
                remove_if_empty(made)
            raise


def resume_configs(ckpt, args, overrides: dict, out: Path):
    """The configs a resumed run goes on with: the checkpoint's, with training settings changed."""
    if not ckpt.can_resume:
        raise UsageError(f"the checkpoint in {out} holds weights only; it cannot be resumed")
    if args.tokenizer is not None:
        raise UsageError(f"a resumed run keeps the tokenizer it was trained with: drop "
                         f"--tokenizer {args.tokenizer}")
    if args.preset is not None and args.preset != ckpt.preset:
        raise UsageError(f"the run in {out} was trained with the preset {ckpt.preset or '(none)'}; "
                         f"a resumed run keeps its settings: drop --preset {args.preset}")
    model_config = ckpt.model.config
    changed = sorted(k for k, v in overrides.items()
                     if k in GPTConfig.__dataclass_fields__ and getattr(model_config, k) != v)
    if changed:
        raise UsageError(f"cannot change the model's shape when resuming ({', '.join(changed)})")
    train_overrides = {k: v for k, v in overrides.items() if k in TrainConfig.__dataclass_fields__}
    train_config = replace(ckpt.train_config, **train_overrides)
    if train_config.lr_decay_iters is None and train_config.max_iters > ckpt.train_config.max_iters:
        # Training longer must not stretch a cosine that is half run (the learning rate
        # would jump back up): it keeps ending where it did, and min_lr holds after that.
        train_config = replace(train_config, lr_decay_iters=ckpt.train_config.max_iters)
        print(f"the learning rate's cosine still ends at step {ckpt.train_config.max_iters} "
              f"(--lr_decay_iters moves it)")
    if ckpt.step >= train_config.max_iters:
        raise UsageError(f"the run in {out} is already at step {ckpt.step}; to train longer, "
                         f"resume with a larger --max_iters")
    return model_config, train_config


def check_memory(model_config: GPTConfig, batch_size: int, device) -> None:
    """Refuse a configuration whose training step (``batch_size`` rows) cannot fit in memory."""
    needed = training_memory(model_config, batch_size)
    free = available_memory(device)
    if free is not None and needed > free:
        raise UsageError(f"a training step of this model needs at least {needed / 2**30:.1f} GiB, "
                         f"and {device} has {free / 2**30:.1f} GiB free: make the model, "
                         f"block_size or batch_size smaller")


def read_tokens(tokenizer, data_path, owner: str) -> TokenizedText:
    """The text in tokens. ``tokenizer``: a spec (char, bpe-N, a file) or a checkpoint's own."""
    try:
        return tokenize_dataset(tokenizer, path=data_path)
    except ValueError as error:
        if isinstance(tokenizer, str):
            raise
        raise UsageError(f"{owner} was trained on a text with another vocabulary ({error})") from None


def run_training(args, out, runtime, model, train_config, state, data: TokenizedText, preset,
                 data_path) -> int:
    main = runtime.distributed.is_main
    tokenizer, train_data, val_data = data.tokenizer, data.train, data.val
    say = print if main else (lambda *args, **kwargs: None)
    if state is not None:
        say(f"resuming {out} at step {state.step} of {train_config.max_iters}")
    say(f"{model.num_parameters() / 1e6:.2f}M parameters on {runtime.device}: {model.config}")
    if not isinstance(tokenizer, CharTokenizer):
        say(f"{tokenizer}: {len(train_data):,} training tokens, {len(val_data):,} validation tokens "
            f"({data.val_characters / len(val_data):.2f} characters per token)")
    say(f"{train_config}")
    if runtime.distributed.enabled:
        world = runtime.distributed.world_size
        say(f"{world} processes, {train_config.batch_size // world} of the "
            f"{train_config.batch_size} rows of each batch apiece")
    if runtime.dtype != torch.float32:
        say(f"forward passes autocast to {str(runtime.dtype).removeprefix('torch.')}")
    if runtime.compile:
        say("training through torch.compile (the first steps wait for it to compile)")
    if runtime.backend == "numpy":
        say("every training step in NumPy, forward and backward by hand (gptlib.numpy_gpt)")
    saved = state.step if state is not None else None  # the step of the checkpoint on disk
    state = state or TrainState.start(model, train_config)

    def save():
        nonlocal saved
        if main:
            save_checkpoint(out, model, tokenizer, train_config=train_config, state=state,
                            preset=preset, data_path=data_path)
            saved = state.step

    def on_eval(step, history):
        save()
        tqdm.write(f"step {step}: train {history['train_loss'][-1]:.4f}, "
                   f"val {history['val_loss'][-1]:.4f} (estimates); checkpoint saved")

    stop = StopRequest()
    started = time.perf_counter()
    with runtime:
        runtime.seed_dropout(train_config.seed, state.step)
        with stop.installed():
            try:
                runtime.train(model, train_data, val_data, train_config, state,
                              on_eval=on_eval, should_stop=stop, progress=not args.quiet)
            except TrainingDiverged as error:
                kept = "nothing was saved" if saved is None else f"the checkpoint of step {saved} is kept"
                raise UsageError(f"{error}; {kept}") from None
    train_seconds = time.perf_counter() - started
    if state.step < train_config.max_iters:  # stopped by a signal
        if saved != state.step:  # not already saved at this step
            save()
        if main:
            print(f"{stop.signal or 'a signal'}: stopped after step {state.step} of "
                  f"{train_config.max_iters}; checkpoint saved in {out}. To continue: "
                  f"python -m gptlib train --out {out} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if main:
        val = evaluate(model, val_data, characters=data.val_characters)
        print(f"trained to step {train_config.max_iters} in {train_seconds:.1f} s; checkpoint: "
              f"{checkpoint_path(out)}")
        print(f"full validation loss: {val.nats:.4f} per token ({val.bits_per_char:.4f} bits per "
              f"character)")
    return 0


# --- sample ---------------------------------------------------------------------------


def cmd_sample(args) -> int:
    if args.tokens <= 0:
        raise UsageError(f"--tokens must be a positive number, got {args.tokens}")
    if args.prompt == "":
        raise UsageError("the prompt is empty: give --prompt at least one character to start from")
    check_seed(args.seed)
    device = pick_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device=device)
    model, tokenizer = ckpt.model, ckpt.tokenizer
    check_sampling(tokenizer.vocab_size, args.temperature, args.top_k, args.top_p)
    check_window_shift(model.config.block_size, args.window_shift)
    prompt = args.prompt
    unknown = sorted({ch for ch in prompt if ch not in tokenizer.stoi}) \
        if isinstance(tokenizer, CharTokenizer) else []  # a byte-level BPE knows every text
    if unknown:
        shown = ", ".join(repr(ch) for ch in unknown)
        if not args.drop_unknown:
            raise UsageError(f"the prompt has characters the model does not know: {shown}; "
                             f"add --drop-unknown to leave them out")
        prompt = "".join(ch for ch in prompt if ch in tokenizer.stoi)
        print(f"(left out {shown})", file=sys.stderr)
        if not prompt:
            raise UsageError("nothing is left of the prompt once the unknown characters are dropped")
    block_size = model.config.block_size
    unit = "characters" if isinstance(tokenizer, CharTokenizer) else "tokens"
    if len(tokenizer.encode(prompt)) > block_size:
        print(f"(the prompt is longer than the model's block_size {block_size}: "
              f"it reads only the last {block_size} {unit})", file=sys.stderr)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    sys.stdout.write(prompt)
    sys.stdout.flush()
    for ch in stream_text(model, tokenizer, prompt, args.tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, generator=generator,
                          use_cache=not args.no_cache, window_shift=args.window_shift):
        sys.stdout.write(ch)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


# --- eval and presets -------------------------------------------------------------------


def cmd_eval(args) -> int:
    device = pick_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device=device)
    data = read_tokens(ckpt.tokenizer, args.data or ckpt.data_path, "the checkpoint")
    if len(data.val) < 2:
        raise UsageError("the validation split has fewer than 2 tokens: nothing to predict")
    started = time.perf_counter()
    result = evaluate(ckpt.model, data.val, characters=data.val_characters)
    print(f"{checkpoint_path(args.checkpoint)} (step {ckpt.step}) on the validation split: "
          f"{result.tokens:,} predictions in {time.perf_counter() - started:.1f} s")
    unit = "character" if isinstance(ckpt.tokenizer, CharTokenizer) else "token"
    print(f"{f'loss (nats per {unit})':<27}{result.nats:.4f}")
    print(f"bits per character         {result.bits_per_char:.4f}")
    print(f"perplexity                 {result.perplexity:.3f}")
    return 0


def cmd_export(args) -> int:
    dtype = getattr(torch, args.dtype)  # one of the parser's choices
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a directory for the exported model")
    if checkpoint_path(out).exists() and not args.overwrite:
        raise UsageError(f"{out} already holds a checkpoint; add --overwrite to replace it")
    ckpt = load_checkpoint(args.checkpoint)
    path = save_checkpoint(out, ckpt.model, ckpt.tokenizer, train_config=ckpt.train_config,
                           preset=ckpt.preset, data_path=ckpt.data_path, weights_dtype=dtype,
                           step=ckpt.step, history=ckpt.history)
    print(f"wrote {path}: the weights of step {ckpt.step} in {args.dtype} "
          f"({path.stat().st_size / 1e6:.1f} MB), for sampling and evaluating (not for resuming)")
    return 0


def cmd_presets(args) -> int:
    for name, preset in PRESETS.items():
        model_config, train_config = preset.model, preset.train
        n = GPT(model_config).num_parameters()
        print(f"{name:12} {n / 1e6:6.2f}M parameters  {model_config.n_layer} layers x "
              f"{model_config.n_head} heads, n_embd {model_config.n_embd}, block "
              f"{model_config.block_size}, batch {train_config.batch_size}, "
              f"{train_config.max_iters} steps at lr {train_config.learning_rate:g}")
        print(f"{'':12} {preset.description}")
    return 0


# --- finetune and classify (chapter 13) -------------------------------------------------

# A fine-tune measures the whole validation set and logs every step: no eval_iters, log_interval.
LORA_RANK, LORA_ALPHA = 8, 16.0  # finetune's defaults for --method lora
FINETUNE_SETTINGS = [f for f in fields(TrainConfig) if f.name not in ("eval_iters", "log_interval")]


def cmd_finetune(args) -> int:
    from gptlib import finetune as ft

    overrides = {f.name: getattr(args, f.name) for f in FINETUNE_SETTINGS if hasattr(args, f.name)}
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pick one")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a directory for the fine-tune")
    existing = ft.finetuned_path(out)
    if existing.exists() and not (args.resume or args.overwrite):
        raise UsageError(f"{out} already holds a fine-tune; add --resume to continue it, or "
                         f"--overwrite to start over and replace it")
    if args.resume and not existing.exists():
        raise UsageError(f"--resume, but there is no fine-tune in {out} to resume from")
    lora_settings = [f"--{name}" for name in ("rank", "alpha") if getattr(args, name) is not None]
    if lora_settings and args.method != "lora":
        verb = "applies" if len(lora_settings) == 1 else "apply"
        raise UsageError(f"{' and '.join(lora_settings)} only {verb} to --method lora, "
                         f"not --method {args.method}")
    rank = LORA_RANK if args.rank is None else args.rank
    alpha = LORA_ALPHA if args.alpha is None else args.alpha
    device = pick_device(args.device)
    base_file = checkpoint_path(args.checkpoint)
    base = load_checkpoint(base_file, device=device)
    tokenizer = base.tokenizer
    n_embd = base.model.config.n_embd
    if args.method == "lora" and not args.resume and isinstance(rank, int) and rank > n_embd:
        raise UsageError(f"--rank {rank} is more than this model's n_embd ({n_embd}), the largest "
                         f"rank an update of its {n_embd}x{n_embd} attention weights can have")
    text = load_shakespeare()
    if isinstance(tokenizer, CharTokenizer):
        missing = sorted(set(text) - set(tokenizer.stoi))
        if missing:
            raise UsageError(f"the checkpoint's vocabulary lacks {len(missing)} characters of Tiny "
                             f"Shakespeare ({''.join(missing[:10])!r}...): fine-tune a model trained on it")
    speeches = ft.speeches(text)
    block_size = base.model.config.block_size
    if args.task == "play":
        splits = ft.play_splits(speeches)
        train_examples, val_examples = splits["train"], splits["val"]
    else:
        val_start = int(len(text) * 0.9)  # the pretraining's validation split (train_val_split)
        splits = ft.reply_splits(ft.reply_examples(speeches, block_size), val_start)
        train_examples, val_examples = splits["train"], splits["val"]
        if not train_examples or not val_examples:
            raise UsageError(f"the model reads {block_size} characters at most: too few for the "
                             f"replies task's prompt and a reply (a block_size of 128 is enough)")
    base_sha = sha256_of(base_file)
    if args.resume:
        saved = ft.load_finetuned(out, base.model, tokenizer, device)
        asked = {"task": args.task, "method": args.method}
        changed = [f"--{k} {v} (it was {saved.info[k]})" for k, v in asked.items() if saved.info[k] != v]
        if changed:
            raise UsageError(f"a resumed fine-tune keeps its task and method: {', '.join(changed)}")
        if saved.info.get("base_sha256") != base_sha:
            raise UsageError(f"the fine-tune in {out} was trained on another checkpoint than "
                             f"{base_file}; resume it on the same one")
        config = replace(saved.config, **overrides)
        if saved.step >= config.max_iters:
            raise UsageError(f"the fine-tune in {out} is already at step {saved.step}; to train "
                             f"longer, resume with a larger --max_iters")
        model, state, info = saved.model, ft.resume_state(saved, config), saved.info
    else:
        config = ft.default_config(args.task, args.method, **overrides)
        model = ft.build(base.model, args.task, args.method, rank, alpha, config.seed)
        state = None
        info = {"task": args.task, "method": args.method, "rank": rank, "alpha": alpha,
                "base_sha256": base_sha}
    if config.batch_size > len(train_examples):
        raise UsageError(f"--batch_size {config.batch_size} is more than the {len(train_examples):,} "
                         f"training examples of the {args.task} task")
    made: list[Path] = []
    with contextlib.ExitStack() as held:
        try:
            made = make_run_directory(out)
            held.enter_context(run_lock(out))
            info = {**info, "base": os.path.relpath(base_file.resolve(), out.resolve())}
            return run_finetune(args, out, model, tokenizer, config, state, info,
                                train_examples, val_examples, splits)
        except BaseException:
            remove_if_empty(made)
            raise


def run_finetune(args, out, model, tokenizer, config, state, info, train_examples, val_examples,
                 splits) -> int:
    from gptlib import finetune as ft

    task, method = info["task"], info["method"]
    if state is not None:
        print(f"resuming {out} at step {state.step} of {config.max_iters}")
    print(f"{task} task, {method}: {ft.trainable_parameters(model):,} of "
          f"{sum(p.numel() for p in model.parameters()):,} parameters train; "
          f"{len(train_examples):,} training and {len(val_examples):,} validation examples")
    print(config)
    saved = state.step if state is not None else None

    def save():
        nonlocal saved
        ft.save_finetuned(out, model, info, config, state)
        saved = state.step

    def on_eval(step, history):
        save()
        measured = f"val loss {history['val_loss'][-1]:.4f}"
        if history["val_accuracy"]:
            measured += f", val accuracy {history['val_accuracy'][-1]:.1%}"
        tqdm.write(f"step {step}: {measured}; fine-tune saved")

    if state is None:
        state = TrainState.start(model, config)
        state.history = ft.new_history()
    stop = StopRequest()
    started = time.perf_counter()
    with stop.installed():
        try:
            ft.finetune(model, tokenizer, train_examples, val_examples, config, state,
                        on_eval=on_eval, should_stop=stop, progress=not args.quiet)
        except TrainingDiverged as error:
            kept = "nothing was saved" if saved is None else f"the fine-tune of step {saved} is kept"
            raise UsageError(f"{error}; {kept}") from None
    seconds = time.perf_counter() - started
    if state.step < config.max_iters:
        if saved != state.step:
            save()
        print(f"{stop.signal or 'a signal'}: stopped after step {state.step} of {config.max_iters}; "
              f"fine-tune saved in {out}. To continue: python -m gptlib finetune --checkpoint "
              f"{args.checkpoint} --task {task} --method {method} --out {out} --resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"fine-tuned to step {config.max_iters} in {seconds:.1f} s: {ft.finetuned_path(out)}")
    if task == "play":
        loss, correct = ft.classify_all(model, tokenizer, splits["test"])
        print(f"test accuracy {correct:.1%} on {len(splits['test']):,} speeches (loss {loss:.4f}); "
              f"try it: python -m gptlib classify --checkpoint {out} --text \"...\"")
    else:
        print(f"validation reply loss {state.history['val_loss'][-1]:.4f} nats per token")
        merged = ft.merge_lora(model)
        path = save_checkpoint(out, merged, tokenizer, step=state.step, history=None)
        print(f"the model with its fine-tune merged in: {path}; sample from it: python -m gptlib "
              f"sample --checkpoint {out} --prompt \"ROMEO said:\\nGood night.\\nJULIET replies:\\n\"")
    return 0


def cmd_classify(args) -> int:
    from gptlib import finetune as ft

    if not args.text.strip():
        raise UsageError("--text is empty: give a speech to classify")
    if not 1 <= args.top <= len(ft.PLAY_TITLES):
        raise UsageError(f"--top must be from 1 to the {len(ft.PLAY_TITLES)} plays, got {args.top}")
    found = ft.open_finetuned(args.checkpoint, device=pick_device(args.device))
    if found.info["task"] != "play":
        raise UsageError(f"{args.checkpoint} is a fine-tune for the {found.info['task']} task, "
                         f"not a classifier; sample from it instead")
    tokenizer = found.tokenizer
    if isinstance(tokenizer, CharTokenizer):
        unknown = sorted({ch for ch in args.text if ch not in tokenizer.stoi})
        if unknown:
            raise UsageError(f"the text has characters the model does not know: "
                             f"{', '.join(repr(ch) for ch in unknown)}")
    probs = ft.predict(found.model, tokenizer, [args.text])[0]
    for index in probs.argsort(descending=True)[:args.top].tolist():
        print(f"{probs[index].item():6.1%}  {ft.PLAY_TITLES[index]}")
    return 0


# --- the parser -------------------------------------------------------------------------


def suggestions(name: str, options: list[str]) -> list[str]:
    """The options a mistyped ``name`` may mean: those it begins (``--eval``), else one
    spelled almost alike (``--max_it``); none rather than a far-fetched one."""
    if not name.startswith("-"):
        return []
    if len(name.lstrip("-")) >= 3:
        started = sorted(o for o in options if o.startswith(name))
        if started:
            return started[:3]
    return difflib.get_close_matches(name, options, n=1, cutoff=0.75)


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (argparse prints the whole usage first), and a
    misspelled option gets a suggestion."""

    def error(self, message):
        if message.startswith("unrecognized arguments: "):
            word = message.removeprefix("unrecognized arguments: ").split()[0]
            name = word.split("=")[0]
            options = [o for a in self._all_actions() for o in a.option_strings]
            guesses = suggestions(name, options)
            hint = f" (did you mean {' or '.join(guesses)}?)" if guesses else ""
            message = f"unknown option {name}{hint}" if name.startswith("-") else \
                f"unexpected argument {word!r}"
        command = getattr(self, "_command_given", None)
        prog = f"{self.prog} {command}" if command in COMMANDS else self.prog
        self.exit(EXIT_USAGE, f"error: {message}; see '{prog} --help'\n")

    def _all_actions(self):
        """This parser's options, and those of the command given (argparse reports unknown
        options from the top parser)."""
        actions = list(self._actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                command = getattr(self, "_command_given", None)
                if command in action.choices:
                    actions += action.choices[command]._actions
        return actions

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        self._command_given = next((a for a in args if not a.startswith("-")), None)
        return super().parse_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m gptlib",
                    description="Train, sample and evaluate the course's GPT.", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    kwargs = {"allow_abbrev": False}

    p = commands.add_parser(
        "train", help="train a GPT on Tiny Shakespeare", **kwargs,
        description="Train a GPT from a preset; any setting below overrides the preset's value.",
        epilog="Defaults shown are the cpu preset's; 'python -m gptlib presets' lists the others.")
    p.add_argument("--preset", default=None, choices=list(PRESETS), help="the recipe (default: cpu)")
    p.add_argument("--out", required=True, help="run directory for the checkpoint")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--data", help="a UTF-8 text file to train on (default: Tiny Shakespeare)")
    p.add_argument("--tokenizer", default=None,
                   help="char (default): one token per character; bpe-N: a byte-level BPE of N "
                        "tokens trained on the training split (e.g. bpe-512); or a tokenizer file "
                        "(chapter 11). The checkpoint keeps it")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--precision", default="auto",
                   choices=["auto", "float32", "bfloat16", "float16"],
                   help="autocast the forward pass; auto: bfloat16 (or float16) on a CUDA GPU, "
                        "float32 elsewhere")
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument("--backend", default="torch", choices=["torch", "numpy"],
                   help="torch (default), or numpy: chapter 10's GPT in NumPy, every gradient "
                        "by hand (CPU, float32, no dropout)")
    cpu = PRESETS["cpu"]
    for title, config in (("model (GPTConfig)", cpu.model), ("training (TrainConfig)", cpu.train)):
        group = p.add_argument_group(title)
        for f in SETTINGS:
            if f.name in type(config).__dataclass_fields__:
                add_setting(group, f, getattr(config, f.name))
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("sample", help="write text with a trained GPT", **kwargs)
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint file")
    p.add_argument("--prompt", default="\n", help="text to start from (default: a newline)")
    p.add_argument("--tokens", type=int, default=500,
                   help="tokens to write, characters for a character model (default 500)")
    p.add_argument("--temperature", type=float, default=1.0, help="> 0; below 1 is safer")
    p.add_argument("--top-k", type=int, default=None, help="keep only the k likeliest characters")
    p.add_argument("--top-p", type=float, default=None, help="nucleus: keep the top mass p")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--no-cache", action="store_true", help="recompute the context every step")
    p.add_argument("--window-shift", type=int, default=None,
                   help="how far the context window jumps once full (default: half a block; "
                        "1 slides it by one character)")
    p.add_argument("--drop-unknown", action="store_true",
                   help="leave out prompt characters outside the vocabulary")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_sample)

    p = commands.add_parser("eval", help="print a checkpoint's loss, bits per character and "
                            "perplexity on the whole validation split", **kwargs)
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint file")
    p.add_argument("--data", help="text file (default: the one the checkpoint was trained on)")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_eval)

    p = commands.add_parser("export", help="write a checkpoint's weights alone, smaller "
                            "(16-bit): to share a trained model", **kwargs)
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint file")
    p.add_argument("--out", required=True, help="directory to write the model to")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                   help="number format of the weights (default: float16)")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already there")
    p.set_defaults(run=cmd_export)

    p = commands.add_parser("presets", help="list the presets and their sizes", **kwargs)
    p.set_defaults(run=cmd_presets)

    p = commands.add_parser(
        "finetune", help="fine-tune a trained GPT on a task of chapter 13", **kwargs,
        description="Fine-tune a checkpoint: --task play (which play a speech comes from) or "
                    "reply (a reply in character, the loss on the reply only).",
        epilog="Defaults shown are the lora method's; the learning rate depends on the method "
               "(probe 0.01, last-block 0.001, lora 0.003, scratch 0.002; min_lr a tenth).")
    p.add_argument("--checkpoint", required=True, help="the pretrained model: a run directory "
                   "or checkpoint file (e.g. assets/shakespeare-laptop)")
    p.add_argument("--task", required=True, choices=["play", "reply"])
    p.add_argument("--method", required=True, choices=["probe", "last-block", "lora", "scratch"],
                   help="probe: a head on the frozen model; last-block: the last block and the "
                        "head; lora: low-rank updates of the attention projections; scratch: "
                        "the same model from random weights")
    p.add_argument("--out", required=True, help="directory for the fine-tune")
    p.add_argument("--resume", action="store_true", help="continue the fine-tune in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the fine-tune in --out")
    p.add_argument("--rank", type=int, default=None,
                   help=f"LoRA's rank, at most the model's n_embd (default {LORA_RANK})")
    p.add_argument("--alpha", type=float, default=None,
                   help=f"LoRA's scale numerator (default {LORA_ALPHA:g})")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from gptlib.finetune import default_config

    shown = default_config("play", "lora")
    group = p.add_argument_group("training (TrainConfig)")
    for f in FINETUNE_SETTINGS:
        add_setting(group, f, getattr(shown, f.name))
    p.set_defaults(run=cmd_finetune)

    p = commands.add_parser("classify", help="say which play a speech comes from, with a "
                            "fine-tuned classifier", **kwargs)
    p.add_argument("--checkpoint", required=True, help="a fine-tune of the play task (its directory)")
    p.add_argument("--text", required=True, help="the speech, without its NAME line")
    p.add_argument("--top", type=int, default=3, help="how many plays to list (default 3)")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_classify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, ValueError, DataError, CheckpointError, OSError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror or error}: {error.filename}"
    return " ".join(str(error).split())
