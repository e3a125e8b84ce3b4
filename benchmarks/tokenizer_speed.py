"""How fast chapter 11's pure-Python tokenizers are, against the reference implementations.

    python benchmarks/tokenizer_speed.py            # everything (the reference trainer: ~10 min)
    python benchmarks/tokenizer_speed.py --quick    # the reference trainer on a tenth of the text

All figures come from one run on one machine, each the best of ``--repeats`` runs
(the reference trainer: one run):

1. training a vocabulary of 1,024 tokens on Tiny Shakespeare with GPT-2's pattern:
   ``BPETokenizer.train`` vs tiktoken's reference trainer (``tiktoken._educational``,
   pure Python, recounts every pair after every merge) vs Hugging Face ``tokenizers``
   (Rust). Ours and the reference must learn the same merges; the script checks.
2. encoding Tiny Shakespeare with GPT-2's tokenizer: ``gpt2_tokenizer()`` (a fresh
   one, so its chunk cache starts empty) vs ``tiktoken`` (Rust), same tokens checked.
"""

from __future__ import annotations

import argparse
import time

import regex
import tiktoken
from tiktoken._educational import bpe_train
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from gptlib.data import load_shakespeare
from gptlib.tokenizers import ENDOFTEXT, GPT2_PATTERN, BPETokenizer, gpt2_files, gpt2_tokenizer


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def hugging_face_train(text: str, vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's split
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer=trainer)
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="time the reference trainer on a tenth of the text and scale it by 10 "
                             "(its cost is linear in the text)")
    args = parser.parse_args()
    text = load_shakespeare()
    print(f"Tiny Shakespeare: {len(text):,} characters; vocabulary {args.vocab}\n")

    print("1. Training")
    split_time, chunks = best_of(args.repeats, lambda: regex.findall(GPT2_PATTERN, text))
    ours_time, ours = best_of(args.repeats, lambda: BPETokenizer.train(text, args.vocab))
    hf_time, _ = best_of(args.repeats, lambda: hugging_face_train(text, args.vocab))
    if args.quick:
        part = text[: len(text) // 10]
        ref_part_time, _ = best_of(1, lambda: bpe_train(part, args.vocab, GPT2_PATTERN, visualise=None))
        ref_time, same = 10 * ref_part_time, None
        ref_label = "reference trainer (tiktoken._educational), a tenth x 10"
    else:
        ref_time, ref = best_of(1, lambda: bpe_train(text, args.vocab, GPT2_PATTERN, visualise=None))
        same = [(ours.vocab[i], i) for i in sorted(ours.vocab)] == list(ref.items())
        ref_label = "reference trainer (tiktoken._educational)"
    print(f"   {'ours (BPETokenizer.train)':<58}{ours_time:9.2f} s")
    print(f"     of which the pre-split (regex.findall, {len(chunks):,} chunks)  {split_time:6.2f} s")
    print(f"   {ref_label:<58}{ref_time:9.2f} s   ours is {ref_time / ours_time:.0f}x faster")
    print(f"   {'Hugging Face tokenizers (Rust)':<58}{hf_time:9.2f} s   ours takes "
          f"{ours_time / hf_time:.1f}x its time")
    if same is not None:
        print(f"   the same {len(ours.merges)} merges as the reference, in order: {same}")

    print("\n2. Encoding with GPT-2's tokenizer")
    encoder_json, vocab_bpe = gpt2_files()
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe),
                                            encoder_json_file=str(encoder_json))
    reference = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                  special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257)
    tiktoken_time, expected = best_of(args.repeats, lambda: reference.encode(text))
    load_time, _ = best_of(args.repeats, gpt2_tokenizer)
    encode_time, ids = best_of(args.repeats, lambda: gpt2_tokenizer().encode(text))
    encode_time -= load_time  # a fresh tokenizer each time: an empty cache, as on first use
    print(f"   {'tiktoken (Rust)':<58}{tiktoken_time:9.2f} s")
    print(f"   {'ours (gpt2_tokenizer().encode, cache empty)':<58}{encode_time:9.2f} s   "
          f"{encode_time / tiktoken_time:.1f}x tiktoken's time")
    print(f"   {'  loading the files (not in the figure above)':<58}{load_time:9.2f} s")
    print(f"   {len(ids):,} tokens, the same as tiktoken's: {ids == expected}")


if __name__ == "__main__":
    main()
