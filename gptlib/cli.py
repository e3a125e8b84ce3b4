"""The command line: ``python -m gptlib train | sample | eval | presets``.

Every mistake a user can type ends in one line on stderr that says what is wrong,
and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch
from tqdm import tqdm

from gptlib.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from gptlib.data import DataError, load_dataset
from gptlib.distributed import end_processes, from_environment, init_processes
from gptlib.model import GPT, GPTConfig
from gptlib.presets import PRESETS, get_preset
from gptlib.sample import check_sampling, check_window_shift, stream_text
from gptlib.train import TrainConfig, autocast_dtype, configure_optimizer, full_loss, train

# Settings that --key value may override: every field of both configs but the vocabulary.
SETTINGS = {f.name: f.type for f in fields(GPTConfig) if f.name != "vocab_size"}
SETTINGS.update({f.name: f.type for f in fields(TrainConfig)})
CASTS = {"int": int, "float": float}


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
            os._exit(130)
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


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA if there is a GPU, else Apple's MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but PyTorch sees no CUDA GPU here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps, but Apple's MPS is not available here")
    return device


def parse_overrides(words: list[str]) -> dict:
    """``["--n_layer", "6", "--learning-rate=3e-4"]`` -> ``{"n_layer": 6, "learning_rate": 3e-4}``."""
    overrides = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            raise UsageError(f"unexpected argument {word!r}; settings are given as --name value")
        name, _, value = word[2:].partition("=")
        name = name.replace("-", "_")
        if name not in SETTINGS:
            close = difflib.get_close_matches(name, SETTINGS, n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            raise UsageError(f"unknown option --{name}{hint}; see 'python -m gptlib train --help'")
        if not value:
            if i + 1 >= len(words):
                raise UsageError(f"--{name} needs a value")
            i += 1
            value = words[i]
        cast = CASTS[SETTINGS[name]]
        try:
            overrides[name] = cast(value)
        except ValueError:
            raise UsageError(f"--{name} takes a number ({SETTINGS[name]}), got {value!r}") from None
        i += 1
    return overrides


# --- train ----------------------------------------------------------------------------


def cmd_train(args, extra: list[str]) -> int:
    overrides = parse_overrides(extra)
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pick one")
    distributed = from_environment()
    device = pick_device(args.device)
    if distributed.enabled and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank)  # one GPU per process
    dtype = autocast_dtype(device, args.precision)
    out = Path(args.out)
    existing = checkpoint_path(out)
    if existing.exists() and not (args.resume or args.overwrite):
        raise UsageError(f"{out} already holds a checkpoint; add --resume to continue that run, "
                         f"or --overwrite to start over and replace it")
    if args.resume and not existing.exists():
        raise UsageError(f"--resume, but there is no checkpoint in {out} to resume from")

    ckpt = load_checkpoint(out, device=device) if args.resume else None
    data_path = args.data or (ckpt.data_path if ckpt else None)
    _, tokenizer, train_data, val_data = load_dataset(path=data_path)
    if args.resume:
        if ckpt.tokenizer.vocab != tokenizer.vocab:
            raise UsageError(f"the checkpoint in {out} was trained on another vocabulary")
        model, model_config = ckpt.model, ckpt.model.config
        changed = sorted(k for k, v in overrides.items()
                         if k in GPTConfig.__dataclass_fields__ and getattr(model_config, k) != v)
        if changed:
            raise UsageError(f"cannot change the model's shape when resuming ({', '.join(changed)})")
        train_overrides = {k: v for k, v in overrides.items() if k in TrainConfig.__dataclass_fields__}
        train_config = TrainConfig.from_dict({**ckpt.train_config.to_dict(), **train_overrides})
        optimizer = configure_optimizer(model, train_config, device.type)
        ckpt.restore_optimizer(optimizer)
        generator = torch.Generator()
        generator.set_state(ckpt.generator_state)
        if ckpt.rng_state:
            ckpt.restore_rng()  # dropout continues with the same random numbers
        start_step, history = ckpt.step, ckpt.history
    else:
        model_config, train_config = get_preset(args.preset, tokenizer.vocab_size, **overrides)
        torch.manual_seed(train_config.seed)
        model = GPT(model_config).to(device)
        optimizer = configure_optimizer(model, train_config, device.type)
        generator = torch.Generator().manual_seed(train_config.seed)
        start_step, history = 0, None
    distributed.shard(train_config.batch_size)  # refuse a batch that does not split evenly
    if start_step >= train_config.max_iters:
        raise UsageError(f"the run in {out} is already at step {start_step}; to train longer, "
                         f"resume with a larger --max_iters (and --lr_decay_iters)")

    # From here on, with torchrun, every process trains and process 0 alone writes.
    main = distributed.is_main
    say = print if main else (lambda *args, **kwargs: None)
    if args.resume:
        say(f"resuming {out} at step {start_step} of {train_config.max_iters}")
    say(f"{model.num_parameters() / 1e6:.2f}M parameters on {device}: {model_config}")
    say(f"{train_config}")
    if distributed.enabled:
        say(f"{distributed.world_size} processes, {train_config.batch_size // distributed.world_size}"
            f" of the {train_config.batch_size} rows of each batch apiece")
    if dtype != torch.float32:
        say(f"forward passes autocast to {str(dtype).removeprefix('torch.')}")
    if args.compile:
        say("training through torch.compile (the first steps wait for it to compile)")

    def save(step, history):
        if main:
            save_checkpoint(out, model, tokenizer, train_config=train_config, optimizer=optimizer,
                            step=step, generator=generator, history=history, data_path=data_path)

    def on_eval(step, history):
        save(step, history)
        tqdm.write(f"step {step}: train {history['train_loss'][-1]:.4f}, "
                   f"val {history['val_loss'][-1]:.4f} (estimates); checkpoint saved")

    stop = StopRequest()
    started = time.perf_counter()
    init_processes(distributed, device)
    if distributed.enabled:
        torch.manual_seed(train_config.seed + start_step + distributed.rank)  # own dropout masks
    try:
        with stop.installed():
            history = train(model, train_data, val_data, train_config, optimizer=optimizer,
                            start_step=start_step, generator=generator, history=history,
                            on_eval=on_eval, progress=not args.quiet, should_stop=stop,
                            dtype=dtype, compile=args.compile, distributed=distributed)
    finally:
        end_processes(distributed)
    train_seconds = time.perf_counter() - started
    step = history["step"][-1] if history["step"] else start_step
    if step < train_config.max_iters:  # stopped by a signal
        if step not in history["eval_step"]:  # not already saved at this step
            save(step, history)
        if main:
            print(f"{stop.signal or 'a signal'}: stopped after step {step} of "
                  f"{train_config.max_iters}; checkpoint saved in {out}. To continue: "
                  f"python -m gptlib train --out {out} --resume", file=sys.stderr)
        return 130
    if main:
        val = full_loss(model, val_data)
        print(f"trained to step {train_config.max_iters} in {train_seconds:.1f} s; checkpoint: "
              f"{checkpoint_path(out)}")
        print(f"full validation loss: {val:.4f}")
    return 0


# --- sample ---------------------------------------------------------------------------


def cmd_sample(args, extra: list[str]) -> int:
    if args.tokens <= 0:
        raise UsageError(f"--tokens must be a positive number of characters, got {args.tokens}")
    if args.prompt == "":
        raise UsageError("the prompt is empty: give --prompt at least one character to start from")
    device = pick_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device=device)
    model, tokenizer = ckpt.model, ckpt.tokenizer
    check_sampling(tokenizer.vocab_size, args.temperature, args.top_k, args.top_p)
    check_window_shift(model.config.block_size, args.window_shift)
    prompt = args.prompt
    unknown = sorted({ch for ch in prompt if ch not in tokenizer.stoi})
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
    if len(prompt) > block_size:
        print(f"(the prompt is longer than the model's block_size {block_size}: "
              f"it reads only the last {block_size} characters)", file=sys.stderr)
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


def cmd_eval(args, extra: list[str]) -> int:
    device = pick_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device=device)
    _, tokenizer, _, val_data = load_dataset(path=args.data or ckpt.data_path)
    if ckpt.tokenizer.vocab != tokenizer.vocab:
        raise UsageError("the checkpoint was trained on a text with another vocabulary")
    started = time.perf_counter()
    loss = full_loss(ckpt.model, val_data)
    print(f"full validation loss of {checkpoint_path(args.checkpoint)} (step {ckpt.step}), "
          f"{len(val_data) - 1:,} predictions in {time.perf_counter() - started:.1f} s:")
    print(f"{loss:.4f}")
    return 0


def cmd_presets(args, extra: list[str]) -> int:
    for name in PRESETS:
        model_config, train_config = get_preset(name)
        n = GPT(model_config).num_parameters()
        print(f"{name:12} {n / 1e6:6.2f}M parameters  {model_config.n_layer} layers x "
              f"{model_config.n_head} heads, n_embd {model_config.n_embd}, block "
              f"{model_config.block_size}, batch {train_config.batch_size}, "
              f"{train_config.max_iters} steps at lr {train_config.learning_rate:g}")
        print(f"{'':12} {PRESETS[name]['description']}")
    return 0


# --- the parser -------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m gptlib", description="Train, sample and evaluate the course's GPT.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    settings = "\n".join(f"  --{name} {kind.upper()}" for name, kind in SETTINGS.items())
    p = commands.add_parser(
        "train", help="train a GPT on Tiny Shakespeare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a GPT from a preset; any setting can be overridden with --name value.",
        epilog=f"settings (override a preset's value):\n{settings}")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS), help="default: cpu")
    p.add_argument("--out", required=True, help="run directory for the checkpoint")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--data", help="a UTF-8 text file to train on (default: Tiny Shakespeare)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--precision", default="auto",
                   choices=["auto", "float32", "bfloat16", "float16"],
                   help="autocast the forward pass; auto: bfloat16 (or float16) on a CUDA GPU, "
                        "float32 elsewhere")
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("sample", help="write text with a trained GPT")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint file")
    p.add_argument("--prompt", default="\n", help="text to start from (default: a newline)")
    p.add_argument("--tokens", type=int, default=500, help="characters to write (default 500)")
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

    p = commands.add_parser("eval", help="print a checkpoint's full validation loss")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint file")
    p.add_argument("--data", help="text file (default: the one the checkpoint was trained on)")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_eval)

    p = commands.add_parser("presets", help="list the presets and their sizes")
    p.set_defaults(run=cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if extra and args.run is not cmd_train:  # only train takes --name value settings
            raise UsageError(f"unknown option {extra[0]}; "
                             f"see 'python -m gptlib {args.command} --help'")
        return args.run(args, extra)
    except (UsageError, ValueError, DataError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
