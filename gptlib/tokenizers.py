"""Chapter 11: tokenizers — words, bytes and byte-pair encoding (BPE), GPT-2's exactly.

- :class:`WordTokenizer`: the first idea everyone has. A vocabulary of the words,
  punctuation marks and runs of whitespace of a text; ``<|unk|>`` for the rest.
- :class:`BPETokenizer`: byte-level BPE. Every text is UTF-8 bytes (256 symbols,
  enough for any text); training merges the most frequent pair of neighbouring
  symbols into a new one, again and again. A regular expression first splits the
  text into chunks (roughly words) so that merges never cross a word boundary.
- :func:`gpt2_tokenizer`: OpenAI's released GPT-2 files loaded into the same class;
  it encodes token for token like ``tiktoken.get_encoding("gpt2")`` (tests/test_tokenizers.py).
- :class:`TokenWindows`: a ``torch.utils.data.Dataset`` of (input, target) windows.

Everything here is plain Python (and the ``regex`` module, for the Unicode classes
``\\p{L}`` and ``\\p{N}`` of GPT-2's pattern, which Python's ``re`` lacks).
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import regex
import torch

from gptlib.data import (
    CharTokenizer,
    DataError,
    data_dir,
    download,
    load_shakespeare,
    load_text,
    sha256_of,
    train_val_split,
    write_atomically,
)

# GPT-2's pre-split pattern, as OpenAI released it: a few English contractions, then
# letters, digits or other symbols (each with at most one leading space), then
# whitespace (a run of spaces before a word leaves its last space to the word).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-4's (tiktoken's cl100k_base): contractions in any case, numbers in groups of
# at most three digits, newlines kept apart from other whitespace.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN, "none": None}

ENDOFTEXT = "<|endoftext|>"
# How many characters past a chunk its pattern may read before deciding it (GPT-2's and
# GPT-4's need 3, for "'ll"; the rest is margin): BPETokenizer.encode_iterable holds back that much.
LOOKAHEAD = 16
SPECIAL_CHOICES = ("refuse", "allow", "plain")


class TokenizerFileError(ValueError):
    """A saved tokenizer file is damaged or is not one. The message says where."""


def check_encodable(text: str) -> None:
    """Refuse a string that UTF-8 cannot encode (a lone surrogate, e.g. ``"\\ud800"``)."""
    if not isinstance(text, str):
        raise TypeError(f"expected a str to encode, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        raise ValueError(
            f"the text holds a lone surrogate U+{code:04X} at index {error.start}, which is "
            f"not a character and has no UTF-8 encoding"
        ) from None


# --------------------------------------------------------------------------- words


WORD_PATTERN = r"\w+|[^\w\s]|\s"  # a word, one punctuation mark, or one whitespace character


class WordTokenizer:
    """One token per word, punctuation mark or whitespace character of the text it was built from.

    Whitespace is kept as tokens, so decoding is joining: ``decode(encode(t)) == t``
    for every text made of known words, however they are spaced (``"It's"`` is ``It``,
    ``'``, ``s``).
    Id 0 is ``<|endoftext|>`` (between documents), id 1 ``<|unk|>`` (any unknown piece).
    """

    UNKNOWN = "<|unk|>"
    SPECIALS = (ENDOFTEXT, UNKNOWN)

    def __init__(self, text: str):
        check_encodable(text)
        pieces = sorted(set(self.split(text)) - set(self.SPECIALS))
        self.itos = list(self.SPECIALS) + pieces
        self.stoi = {piece: i for i, piece in enumerate(self.itos)}

    @staticmethod
    def split(text: str) -> list[str]:
        """The pieces of ``text``; ``<|endoftext|>`` stays one piece."""
        pieces = []
        for i, part in enumerate(text.split(ENDOFTEXT)):
            if i:
                pieces.append(ENDOFTEXT)
            pieces.extend(re.findall(WORD_PATTERN, part))
        return pieces

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        check_encodable(text)
        unknown = self.stoi[self.UNKNOWN]
        return [self.stoi.get(piece, unknown) for piece in self.split(text)]

    def encode_documents(self, documents) -> list[int]:
        """The documents' tokens, one ``<|endoftext|>`` between each two."""
        return self.encode(ENDOFTEXT.join(documents))

    def unknown(self, text: str) -> list[str]:
        """The pieces of ``text`` that are not in the vocabulary, in order, each once."""
        return list(dict.fromkeys(p for p in self.split(text) if p not in self.stoi))

    def decode(self, ids) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]!r} is outside the vocabulary (0..{self.vocab_size - 1})")
        return "".join(self.itos[i] for i in ids)

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------- BPE


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right.

    >>> merge([5, 6, 6, 6, 7], (6, 6), 99)
    [5, 99, 6, 7]
    """
    out, i, n = [], 0, len(ids)
    first, second = pair
    while i < n:
        if i + 1 < n and ids[i] == first and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """Byte-level byte-pair encoding.

    - ``byte_ids[b]``: the token id of byte value ``b`` (``b`` itself for a trained
      tokenizer; GPT-2 numbers its bytes in another order).
    - ``merges``: ``(left id, right id) -> new id``, in the order they were learned
      (its rank: encoding applies the earliest merge first).
    - ``pattern``: the regular expression that splits a text into chunks first (None: no split).
    - ``special_tokens``: strings such as ``<|endoftext|>`` that are one token each.
    """

    def __init__(self, merges, pattern: str | None = GPT2_PATTERN, byte_ids=None,
                 special_tokens: dict[str, int] | None = None):
        self.byte_ids = list(range(256)) if byte_ids is None else list(byte_ids)
        if sorted(self.byte_ids) != sorted(set(self.byte_ids)) or len(self.byte_ids) != 256:
            raise ValueError("byte_ids must give 256 distinct token ids, one for each byte value")
        self.merges = dict(merges)
        self.pattern = pattern
        self._split = regex.compile(pattern) if pattern else None
        self.vocab = {token: bytes([b]) for b, token in enumerate(self.byte_ids)}
        for (left, right), new in self.merges.items():
            if left not in self.vocab or right not in self.vocab:
                raise ValueError(f"the merge {left} + {right} uses a token that does not exist yet")
            if new in self.vocab and self.vocab[new] != self.vocab[left] + self.vocab[right]:
                raise ValueError(f"token id {new} is given to two different byte strings")
            self.vocab[new] = self.vocab[left] + self.vocab[right]
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.special_tokens = dict(special_tokens or {})
        for text, token in self.special_tokens.items():
            if token in self.vocab or list(self.special_tokens.values()).count(token) > 1:
                raise ValueError(f"the special token {text!r} needs an id of its own, not {token}")
        self.special_by_id = {token: text for text, token in self.special_tokens.items()}
        self._special_split = None
        if self.special_tokens:  # longest first, so that one special token never hides another
            alternatives = sorted(self.special_tokens, key=len, reverse=True)
            self._special_split = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        self._cache: dict[str, list[int]] = {}
        self.merge_counts: list[int] | None = None  # set by train(): each merge's count

    @property
    def vocab_size(self) -> int:
        """One more than the largest id: the rows an embedding table needs."""
        return max(list(self.vocab) + list(self.special_by_id)) + 1

    # ---- training

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str | None = GPT2_PATTERN,
              special_tokens=(), verbose: bool = False) -> "BPETokenizer":
        """Learn ``vocab_size - 256`` merges from ``text`` (fewer if the text runs out of pairs).

        ``special_tokens`` (such as ``<|endoftext|>``) get the ids after the merges. The text
        is split on them first, as documents: their characters take part in no merge.

        ``merge_counts`` of the result says how many times each merged pair occurred.

        At each step the most frequent pair of neighbouring tokens becomes a new token.
        A tie goes to the pair that occurs first in the text, as in the reference trainer
        (``tiktoken._educational.bpe_train``), so the merges are the same, in the same order.

        The text is split into chunks and each distinct chunk is kept once, with its count.
        Merging a pair changes only the chunks that hold it (``where``), so the pair counts are
        updated there instead of recounted over the whole text; a heap finds the top pair.
        """
        check_encodable(text)
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be at least 256 (one token per byte), got {vocab_size}")
        special_tokens = list(special_tokens)
        if isinstance(special_tokens, str) or not all(isinstance(s, str) and s for s in special_tokens) \
                or len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"special_tokens must be distinct non-empty strings, got {special_tokens!r}")
        # A special token separates documents: split the text there first, so that no merge
        # learns from a special token's characters or crosses from one document into the next.
        documents = [text]
        if special_tokens:
            alternatives = sorted(special_tokens, key=len, reverse=True)
            documents = re.split("|".join(map(re.escape, alternatives)), text)
        pieces = [piece for document in documents
                  for piece in (regex.findall(pattern, document) if pattern else [document])]
        chunks = Counter(piece for piece in pieces if piece)
        words = [list(chunk.encode("utf-8")) for chunk in chunks]  # distinct chunks, first seen first
        counts = list(chunks.values())
        vocab = {b: bytes([b]) for b in range(256)}
        id_of = {v: k for k, v in vocab.items()}

        pair_count: Counter = Counter()
        where: dict[tuple[int, int], set[int]] = {}
        for w, ids in enumerate(words):
            for pair in zip(ids, ids[1:]):
                pair_count[pair] += counts[w]
                where.setdefault(pair, set()).add(w)

        def first_seen(pair):
            """Where ``pair`` first occurs in the text: (chunk number, byte offset in the chunk)."""
            w = min(where[pair])
            ids, offset = words[w], 0
            for i in range(len(ids) - 1):
                if (ids[i], ids[i + 1]) == pair:
                    return w, offset
                offset += len(vocab[ids[i]])
            raise AssertionError("a pair is listed in a chunk that does not hold it")

        # Entries (-count, first seen, pair). Counts only fall and first occurrences only move
        # later, so an entry is never worse than the truth: check the top one and push it back
        # with its true key if it changed.
        heap = [(-c, first_seen(p), p) for p, c in pair_count.items()]
        heapq.heapify(heap)
        merges: dict[tuple[int, int], int] = {}
        merge_counts: list[int] = []  # how often each merged pair occurred when it was merged
        while len(vocab) < vocab_size and heap:
            negative, seen, pair = heapq.heappop(heap)
            count = pair_count.get(pair, 0)
            if count <= 0:
                continue
            if count != -negative or first_seen(pair) != seen:
                heapq.heappush(heap, (-count, first_seen(pair), pair))
                continue
            joined = vocab[pair[0]] + vocab[pair[1]]
            new = id_of.get(joined)
            fresh = new is None  # the same bytes can come from two different pairs
            if fresh:
                new = len(vocab)
                vocab[new], id_of[joined] = joined, new
            merges[pair] = new
            merge_counts.append(count)
            if verbose:
                print(f"merge {len(merges)}: {vocab[pair[0]]!r} + {vocab[pair[1]]!r} -> "
                      f"{joined!r} ({count} times)")
            gained = set()
            for w in where.pop(pair):
                old, f = words[w], counts[w]
                words[w] = merged = merge(old, pair, new)
                old_pairs, new_pairs = Counter(zip(old, old[1:])), Counter(zip(merged, merged[1:]))
                for p, n in old_pairs.items():
                    pair_count[p] -= n * f
                    if p not in new_pairs and p != pair:
                        where[p].discard(w)
                for p, n in new_pairs.items():
                    pair_count[p] += n * f
                    where.setdefault(p, set()).add(w)
                    if new in p or not fresh:
                        gained.add(p)
            del pair_count[pair]
            for p in gained:
                if pair_count[p] > 0:
                    heapq.heappush(heap, (-pair_count[p], first_seen(p), p))
        specials = {s: len(vocab) + i for i, s in enumerate(special_tokens)}  # after the merges
        tokenizer = cls(merges, pattern=pattern, special_tokens=specials)
        tokenizer.merge_counts = merge_counts
        return tokenizer

    # ---- encoding and decoding

    def encode_chunk(self, chunk: str) -> list[int]:
        """One chunk's tokens: its bytes, then the merges, earliest learned first."""
        ids = self._cache.get(chunk)
        if ids is not None:
            return list(ids)
        ids = [self.byte_ids[b] for b in chunk.encode("utf-8")]
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                break
            ids = merge(ids, pair, self.merges[pair])
        if len(self._cache) < 100_000:
            self._cache[chunk] = ids
        return list(ids)

    def encode_ordinary(self, text: str) -> list[int]:
        """The tokens of ``text``, with special tokens' strings treated as plain text."""
        check_encodable(text)
        chunks = self._split.findall(text) if self._split else [text] if text else []
        ids: list[int] = []
        for chunk in chunks:
            ids.extend(self.encode_chunk(chunk))
        return ids

    def encode(self, text: str, special: str = "refuse") -> list[int]:
        """The tokens of ``text``. What a special token's string in the text becomes:

        - ``"refuse"`` (the default): a ValueError, since text from outside (a user, a
          web page) must not be able to write a control token;
        - ``"allow"``: its one special token;
        - ``"plain"``: ordinary text, like any other characters.
        """
        if special not in SPECIAL_CHOICES:
            raise ValueError(f"special must be one of {', '.join(SPECIAL_CHOICES)}, got {special!r}")
        check_encodable(text)
        if self._special_split is None or special == "plain":
            return self.encode_ordinary(text)
        parts = self._special_split.split(text)  # text, special, text, special, ..., text
        if special == "refuse" and len(parts) > 1:
            found = self._special_split.search(text)
            raise ValueError(
                f"the text holds the special token {found.group()!r} at index {found.start()}; "
                f"pass special='allow' to encode it as that token or special='plain' to encode "
                f"it as ordinary text")
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                ids.append(self.special_tokens[part])
            else:
                ids.extend(self.encode_ordinary(part))
        return ids

    def encode_iterable(self, texts, special: str = "refuse"):
        """The tokens of the concatenation of ``texts`` (an open file's lines, say), as they come.

        The same ids as ``encode("".join(texts))``, without holding the whole text: each
        piece is encoded once what follows it cannot change it, and only the last chunk
        (roughly a word) waits for the next piece. Memory stays bounded by the longest
        chunk, so a corpus larger than memory can be tokenized::

            with open(path, encoding="utf-8") as f:
                ids = array.array("H", tokenizer.encode_iterable(f))

        (With ``pattern=None`` the text between special tokens is one chunk, so it waits whole.)
        """
        if special not in SPECIAL_CHOICES:  # checked now, not at the first token asked for
            raise ValueError(f"special must be one of {', '.join(SPECIAL_CHOICES)}, got {special!r}")
        return self._encode_stream(iter(texts), special)

    def _encode_stream(self, texts, special: str):
        pending = ""
        for text in texts:
            check_encodable(text)
            ids, pending = self._encode_settled(pending + text, special)
            yield from ids
        if pending:
            yield from self.encode(pending, special)

    def _encode_settled(self, text: str, special: str) -> tuple[list[int], str]:
        """The tokens of what in ``text`` no following text can change, and the rest.

        A chunk that ends ``LOOKAHEAD`` characters or more before the end of the text was
        decided by the characters after it: more text cannot change it (GPT-2's pattern
        looks at most 3 ahead: ``'l`` is ``'`` and ``l``, but ``'ll`` one chunk). Settled
        chunks are encoded as found here, not re-split: alone, a prefix could split
        otherwise at its end (``"\\n\\n"`` before a word is two chunks, at the end of a text
        one). A special token is a hard boundary, but one may be arriving: a tail that
        could begin one waits.
        """
        ids: list[int] = []
        start, end = 0, len(text)
        if self._special_split is not None and special != "plain":
            for found in self._special_split.finditer(text):
                start = found.end()
            if start:
                ids = self.encode(text[:start], special)  # ends with a special token
            longest = max(map(len, self.special_tokens))
            for k in range(min(longest - 1, end - start), 0, -1):
                if any(s.startswith(text[end - k:]) for s in self.special_tokens):
                    end -= k
                    break
        if self._split is None:
            return ids, text[start:]
        rest = start
        for chunk in self._split.finditer(text, start, end):
            if chunk.end() > end - LOOKAHEAD:
                break
            ids.extend(self.encode_chunk(chunk.group()))
            rest = chunk.end()
        return ids, text[rest:]

    def token_bytes(self, ids) -> list[bytes]:
        """The bytes of each token (special tokens as their UTF-8 string)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for token in ids:
            if token in self.vocab:
                out.append(self.vocab[token])
            elif token in self.special_by_id:
                out.append(self.special_by_id[token].encode("utf-8"))
            else:
                raise ValueError(f"token id {token!r} is not in the vocabulary")
        return out

    def decode(self, ids, errors: str = "replace") -> str:
        """The text of ``ids``. A token list cut inside a character's bytes gives U+FFFD there."""
        return b"".join(self.token_bytes(ids)).decode("utf-8", errors=errors)

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={len(self.special_tokens)})")

    # ---- saving and loading: a text file a person can read, no pickle

    HEADER = "gptlib-bpe 1"

    def dumps(self) -> str:
        lines = [self.HEADER,
                 "pattern " + json.dumps(self.pattern),
                 "bytes " + " ".join(map(str, self.byte_ids))]
        lines += [f"special {json.dumps(s)} {i}" for s, i in self.special_tokens.items()]
        lines += [f"merge {a} {b} {new}" for (a, b), new in self.merges.items()]
        return "\n".join(lines) + "\n"

    def save(self, path) -> Path:
        """Write the tokenizer to ``path`` atomically (a temporary file, then renamed)."""
        return write_atomically(path, lambda tmp: Path(tmp).write_text(self.dumps(), encoding="utf-8"))

    @classmethod
    def loads(cls, content: str, source: str = "the tokenizer") -> "BPETokenizer":
        lines = content.split("\n")
        if lines[0] != cls.HEADER:
            raise TokenizerFileError(f"{source} is not a gptlib BPE tokenizer (its first line is "
                                     f"{lines[0][:40]!r}, expected {cls.HEADER!r})")
        pattern, byte_ids, special, merges = None, None, {}, {}
        for number, line in enumerate(lines[1:], start=2):
            if not line:
                continue
            key, _, value = line.partition(" ")
            try:
                if key == "pattern":
                    pattern = json.loads(value)
                    if pattern is not None:
                        regex.compile(pattern)
                elif key == "bytes":
                    byte_ids = [int(v) for v in value.split()]
                elif key == "special":
                    name, token = value.rsplit(" ", 1)
                    special[json.loads(name)] = int(token)
                elif key == "merge":
                    a, b, new = (int(v) for v in value.split())
                    merges[a, b] = new
                else:
                    raise ValueError(f"unknown entry {key!r}")
            except (ValueError, TypeError, regex.error) as error:
                raise TokenizerFileError(f"{source}, line {number}: {error}") from None
        try:
            return cls(merges, pattern=pattern, byte_ids=byte_ids, special_tokens=special)
        except ValueError as error:
            raise TokenizerFileError(f"{source} does not hold a consistent tokenizer: {error}") from None

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        path = Path(path)
        try:
            content = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TokenizerFileError(f"no tokenizer file at {path}") from None
        except (UnicodeDecodeError, IsADirectoryError) as error:
            raise TokenizerFileError(f"{path} is not a tokenizer file ({error})") from None
        return cls.loads(content, source=str(path))


# --------------------------------------------------------------------------- GPT-2's files

GPT2_FILES = {  # name: (OpenAI's public URL, SHA-256)
    "encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's files write each byte as a printable character: this is its table.

    The 188 printable bytes stand for themselves; the other 68 (controls, space,
    some Latin-1) are written as the characters from U+0100 on, in byte order.
    """
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def gpt2_files(folder=None) -> tuple[Path, Path]:
    """``encoder.json`` and ``vocab.bpe``, downloaded once into ``<data folder>/gpt2`` and checked."""
    folder = Path(folder) if folder is not None else data_dir() / "gpt2"
    paths = []
    for name, (url, sha256) in GPT2_FILES.items():
        path = folder / name
        if not path.exists():
            download(url, path, sha256)
        if sha256_of(path) != sha256:
            raise DataError(f"{path} is not GPT-2's {name} (its SHA-256 differs): delete it to "
                            f"download a fresh copy")
        paths.append(path)
    return paths[0], paths[1]


def gpt2_tokenizer(folder=None) -> BPETokenizer:
    """GPT-2's tokenizer, from OpenAI's ``encoder.json`` (token -> id) and ``vocab.bpe`` (merges)."""
    encoder_path, merges_path = gpt2_files(folder)
    encoder = json.loads(encoder_path.read_text(encoding="utf-8"))
    byte_of = {char: b for b, char in bytes_to_unicode().items()}
    byte_ids = [encoder[bytes_to_unicode()[b]] for b in range(256)]
    merges = {}
    for line in merges_path.read_text(encoding="utf-8").split("\n")[1:]:  # line 1: a version
        if line:
            left, right = line.split(" ")
            merges[encoder[left], encoder[right]] = encoder[left + right]
    tokenizer = BPETokenizer(merges, GPT2_PATTERN, byte_ids, {ENDOFTEXT: encoder[ENDOFTEXT]})
    for token, token_id in encoder.items():  # the merges rebuild every entry of encoder.json
        if token != ENDOFTEXT and tokenizer.vocab[token_id] != bytes(byte_of[c] for c in token):
            raise ValueError(f"GPT-2's files disagree about token {token_id}")
    return tokenizer


# --------------------------------------------------------------------------- windows


class TokenWindows(torch.utils.data.Dataset):
    """(input, target) windows of ``block_size`` tokens, one every ``stride`` tokens.

    Window ``i`` starts at ``i * stride``; its target is its input shifted by one, so
    it reads ``block_size + 1`` tokens. ``stride == block_size`` (the default): windows
    side by side, no overlap; ``stride == 1``: every window. There are
    ``(len(tokens) - block_size - 1) // stride + 1`` windows; the tokens after the last
    one (fewer than ``stride``) are in none.
    """

    def __init__(self, tokens, block_size: int, stride: int | None = None):
        stride = block_size if stride is None else stride
        if block_size <= 0 or stride <= 0:
            raise ValueError(f"block_size and stride must be positive, got {block_size} and {stride}")
        self.tokens = torch.as_tensor(tokens, dtype=torch.long)
        if len(self.tokens) < block_size + 1:
            raise ValueError(f"a window of {block_size} tokens and its target need "
                             f"{block_size + 1} tokens; the text has {len(self.tokens)}")
        self.block_size, self.stride = block_size, stride

    def __len__(self) -> int:
        return (len(self.tokens) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} of {len(self)}")
        start = (i % len(self)) * self.stride
        window = self.tokens[start:start + self.block_size + 1]
        return window[:-1], window[1:]


# --------------------------------------------------------------------------- a corpus in tokens


@dataclass
class TokenizedText:
    """A text cut into tokens and split: the first 90% of its *characters* train, the rest validate.

    The split is by characters whatever the tokenizer, so every model is scored on the
    same validation text, and bits per character (``val_characters``) compare them.
    """

    tokenizer: object
    train: torch.Tensor
    val: torch.Tensor
    val_characters: int


def make_tokenizer(spec: str, text: str, train_characters: int):
    """``"char"``: one token per character of ``text``; ``"bpe-N"``: a BPE of N tokens trained
    on the training part of ``text`` (its first ``train_characters``) with GPT-2's pattern;
    anything else: a tokenizer file saved by :meth:`BPETokenizer.save`."""
    if spec == "char":
        return CharTokenizer(text)
    found = re.fullmatch(r"bpe-(\d+)", spec)
    if found:
        return BPETokenizer.train(text[:train_characters], int(found.group(1)))
    if not Path(spec).exists():
        raise ValueError(f"the tokenizer must be char, bpe-N (N >= 256, e.g. bpe-512) or a "
                         f"tokenizer file; there is no file {spec}")
    return BPETokenizer.load(spec)


def tokenize_dataset(tokenizer="char", path=None, train_fraction: float = 0.9) -> TokenizedText:
    """Tiny Shakespeare (or the text file at ``path``) in tokens, split into train and val.

    ``tokenizer`` is a spec for :func:`make_tokenizer` or a tokenizer already made (a
    checkpoint's). With ``"char"`` the result is exactly ``gptlib.data.load_dataset``'s.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    text = load_shakespeare() if path is None else load_text(path)
    n = int(train_fraction * len(text))
    if isinstance(tokenizer, str):
        tokenizer = make_tokenizer(tokenizer, text, n)
    if isinstance(tokenizer, CharTokenizer):
        train, val = train_val_split(torch.tensor(tokenizer.encode(text), dtype=torch.long),
                                     train_fraction)
    else:
        train = torch.tensor(tokenizer.encode(text[:n]), dtype=torch.long)
        val = torch.tensor(tokenizer.encode(text[n:]), dtype=torch.long)
    return TokenizedText(tokenizer, train, val, len(text) - n)

