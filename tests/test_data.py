import hashlib
import http.server
import re
import threading
from pathlib import Path

import pytest
import torch

from gptlib import data
from gptlib.data import CharTokenizer, DataError, get_batch, train_val_split

GOOD = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


# --- the corpus -------------------------------------------------------------


def test_corpus_has_the_published_size_vocabulary_and_checksum():
    text = data.load_shakespeare()
    assert len(text) == data.DATA_N_CHARS == 1_115_394
    assert len(set(text)) == 65
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == data.DATA_SHA256
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")


def test_data_dir_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTLIB_DATA_DIR", str(tmp_path / "corpus"))
    assert data.data_dir() == tmp_path / "corpus"


def test_data_dir_defaults_to_a_per_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("GPTLIB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.data_dir() == tmp_path / "gptlib"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.data_dir() == Path.home() / ".cache" / "gptlib"


def test_a_cached_file_that_fails_the_checksum_is_refused_and_left_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTLIB_DATA_DIR", str(tmp_path))
    bad = tmp_path / data.DATA_FILENAME
    bad.write_text("not shakespeare")
    with pytest.raises(DataError, match="delete it"):
        data.load_shakespeare()
    assert bad.read_text() == "not shakespeare"


# --- the download path, against a real HTTP server on 127.0.0.1 -------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/good.txt":
            self._send(GOOD)
        elif self.path == "/wrong.txt":
            self._send(GOOD.replace(b"speak", b"sneak"))
        elif self.path == "/truncated.txt":
            self._send(GOOD[: len(GOOD) // 2])
        elif self.path == "/cut-off.txt":
            # Promises the whole file, sends half, then closes the connection.
            self._send(GOOD[: len(GOOD) // 2], length=len(GOOD))
            self.close_connection = True
        else:
            self.send_error(404)

    def _send(self, body, length=None):
        self.send_response(200)
        self.send_header("Content-Length", str(length or len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_keeps_a_good_file(server, tmp_path):
    dest = tmp_path / "cache" / "corpus.txt"
    assert data.download(f"{server}/good.txt", dest, GOOD_SHA) == dest
    assert dest.read_bytes() == GOOD
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file left behind
    assert dest.stat().st_mode & 0o777 == 0o644  # readable by others, like any download


@pytest.mark.parametrize("name", ["wrong.txt", "truncated.txt"])
def test_download_keeps_nothing_that_fails_the_checksum(server, tmp_path, name):
    dest = tmp_path / "corpus.txt"
    with pytest.raises(DataError, match="failed its checksum"):
        data.download(f"{server}/{name}", dest, GOOD_SHA)
    assert list(tmp_path.iterdir()) == []


def test_download_keeps_nothing_when_the_connection_drops(server, tmp_path):
    dest = tmp_path / "corpus.txt"
    with pytest.raises(DataError, match="Could not download"):
        data.download(f"{server}/cut-off.txt", dest, GOOD_SHA)
    assert list(tmp_path.iterdir()) == []


def test_download_does_not_replace_a_file_with_a_bad_one(server, tmp_path):
    dest = tmp_path / "corpus.txt"
    dest.write_bytes(b"previous copy")
    with pytest.raises(DataError):
        data.download(f"{server}/wrong.txt", dest, GOOD_SHA)
    assert dest.read_bytes() == b"previous copy"
    assert list(tmp_path.iterdir()) == [dest]


def test_load_shakespeare_downloads_on_first_use_then_reads_the_cache(
    server, monkeypatch, tmp_path
):
    monkeypatch.setenv("GPTLIB_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(data, "DATA_SHA256", GOOD_SHA)
    assert data.load_shakespeare(url=f"{server}/good.txt") == GOOD.decode()
    # Second use: the URL is not touched (a 404 here would raise if it were).
    assert data.load_shakespeare(url=f"{server}/missing.txt") == GOOD.decode()


def test_offline_without_a_cached_copy_says_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTLIB_DATA_DIR", str(tmp_path))
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused.
    with pytest.raises(DataError) as excinfo:
        data.load_shakespeare(url="http://127.0.0.1:9/input.txt")
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(tmp_path / data.DATA_FILENAME) in message
    assert "GPTLIB_DATA_DIR" in message
    assert list(tmp_path.iterdir()) == []


def test_an_http_error_is_reported_without_keeping_a_file(server, tmp_path):
    with pytest.raises(DataError, match="Not Found"):
        data.download(f"{server}/missing.txt", tmp_path / "corpus.txt", GOOD_SHA)
    assert list(tmp_path.iterdir()) == []


# --- the tokenizer ----------------------------------------------------------


def test_tokenizer_vocabulary_is_the_sorted_distinct_characters():
    tok = CharTokenizer("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]


def test_tokenizer_round_trips_the_whole_corpus():
    text = data.load_shakespeare()
    tok = CharTokenizer(text)
    ids = tok.encode(text)
    assert max(ids) == tok.vocab_size - 1 == 64
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids[:100])) == text[:100]


def test_tokenizer_rebuilds_from_its_vocabulary():
    tok = CharTokenizer("the quick brown fox")
    again = CharTokenizer(tok.vocab)
    assert again.stoi == tok.stoi


def test_unknown_characters_are_named_in_the_error():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"'z', 'é'"):
        tok.encode("abzcé")


def test_decoding_an_id_outside_the_vocabulary_is_an_error():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CharTokenizer("abc").decode([0, 7])


def test_tokenizer_needs_text():
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer("")


# --- split and batches ------------------------------------------------------


def test_split_is_ninety_ten_by_position():
    ids = torch.arange(1000)
    train, val = train_val_split(ids)
    assert len(train) == 900 and len(val) == 100
    assert torch.equal(torch.cat([train, val]), ids)


def test_split_of_the_corpus():
    _, tok, train, val = data.load_dataset()
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert tok.vocab_size == 65


def test_batch_targets_are_the_inputs_shifted_by_one():
    ids = torch.arange(100)  # token i sits at position i, so windows are easy to check
    x, y = get_batch(ids, batch_size=16, block_size=8, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 8)
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1)
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(16, 7, dtype=torch.long))
    assert int(y.max()) <= 99


def test_batches_are_reproducible_with_a_generator():
    ids = torch.arange(10_000)
    a = get_batch(ids, 4, 16, generator=torch.Generator().manual_seed(42))
    b = get_batch(ids, 4, 16, generator=torch.Generator().manual_seed(42))
    c = get_batch(ids, 4, 16, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_batches_land_on_the_requested_device():
    x, y = get_batch(torch.arange(100), 2, 4, device="meta")
    assert x.device.type == y.device.type == "meta"


def test_batch_needs_a_block_shorter_than_the_data():
    with pytest.raises(ValueError, match="at least 11 tokens"):
        get_batch(torch.arange(10), 2, 10)
    with pytest.raises(ValueError, match="positive"):
        get_batch(torch.arange(10), 0, 4)


# --- where each play starts -------------------------------------------------

# A speech is a "NAME:" line at the start of the file or right after a blank line.
SPEECH = re.compile(r"(?:^|(?<=\n\n))([^\n]+):\n")

TITLES = (
    "Coriolanus", "Richard III", "Richard II", "Romeo and Juliet", "Henry VI Part 3",
    "The Winter's Tale", "Measure for Measure", "The Taming of the Shrew", "The Tempest",
)
# How each play opens: its first speaker and the start of the first speech.
OPENINGS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "GLOUCESTER:\nNow is the winter of our discontent",
    "KING RICHARD II:\nOld John of Gaunt, time-honour'd Lancaster,",
    "SAMPSON:\nGregory, o' my word, we'll not carry coals.",
    "WARWICK:\nI wonder how the king escaped our hands.",
    "ARCHIDAMUS:\nIf you shall chance, Camillo, to visit Bohemia,",
    "DUKE VINCENTIO:\nEscalus.\n\nESCALUS:\nMy lord.\n\nDUKE VINCENTIO:\nOf government",
    "SLY:\nI'll pheeze you, in faith.\n\nHostess:\nA pair of stocks, you rogue!",
    "Master:\nBoatswain!\n\nBoatswain:\nHere, master: what cheer?",
)
# The last line of each play but the last (The Tempest stops in the middle of Act II).
ENDINGS = (
    "Yet he shall have a noble memory. Assist.",
    "That she may long live here, God say amen!",
    "In weeping after this untimely bier.",
    "Than this of Juliet and her Romeo.",
    "For here, I hope, begins our lasting joy.",
    "We were dissever'd: hastily lead away.",
    "What's yet behind, that's meet you all should know.",
    "'Tis a wonder, by your leave, she will be tamed so.",
)
# Characters who speak in one play only: every speech of theirs must fall inside it.
PRINCIPALS = (
    {"CORIOLANUS", "MENENIUS", "VOLUMNIA", "AUFIDIUS"},
    {"KING RICHARD III", "LADY ANNE", "BUCKINGHAM", "RICHMOND"},
    {"KING RICHARD II", "HENRY BOLINGBROKE", "JOHN OF GAUNT", "DUKE OF AUMERLE"},
    {"ROMEO", "MERCUTIO", "FRIAR LAURENCE", "Nurse"},
    {"KING HENRY VI", "LADY GREY", "KING LEWIS XI", "CLIFFORD"},
    {"LEONTES", "HERMIONE", "PAULINA", "AUTOLYCUS"},
    {"DUKE VINCENTIO", "ISABELLA", "ANGELO", "LUCIO"},
    {"SLY", "PETRUCHIO", "KATHARINA", "GRUMIO"},
    {"PROSPERO", "MIRANDA", "ARIEL", "GONZALO"},
)
VAL_START = 1_003_854  # int(0.9 * len(corpus)): the validation split starts here


@pytest.fixture(scope="module")
def corpus():
    return data.load_shakespeare()


def _speeches(text):
    """(offset, speaker) for every speech of the corpus."""
    return [(m.start(), m.group(1)) for m in SPEECH.finditer(text)]


def _play_ends():
    return [start for _, start in data.PLAYS[1:]] + [data.DATA_N_CHARS]


def test_plays_are_the_nine_titles_in_file_order():
    assert tuple(title for title, _ in data.PLAYS) == TITLES
    starts = [start for _, start in data.PLAYS]
    assert starts[0] == 0
    assert starts == sorted(set(starts))  # strictly increasing
    assert starts[-1] < data.DATA_N_CHARS


def test_the_corpus_is_a_sequence_of_speeches(corpus):
    # Every block after a blank line opens with a "NAME:" line, so speeches are all there is.
    assert len(_speeches(corpus)) == len(corpus.split("\n\n")) == 7222


def test_every_play_starts_at_the_beginning_of_a_speech(corpus):
    speech_starts = {offset for offset, _ in _speeches(corpus)}
    for title, start in data.PLAYS:
        assert start in speech_starts, title
        assert start == 0 or corpus[start - 2 : start] == "\n\n", title


@pytest.mark.parametrize("k", range(9))
def test_each_play_opens_with_its_first_speech_and_follows_the_last_one(corpus, k):
    title, start = data.PLAYS[k]
    assert corpus[start:].startswith(OPENINGS[k]), title
    if k > 0:
        # Before Romeo and Juliet the file has two blank lines instead of one.
        assert corpus[:start].rstrip("\n").endswith(ENDINGS[k - 1]), title


def test_sizes_of_the_plays_in_characters_and_speeches(corpus):
    speech_offsets = [offset for offset, _ in _speeches(corpus)]
    sizes = [
        (end - start, sum(start <= offset < end for offset in speech_offsets))
        for (_, start), end in zip(data.PLAYS, _play_ends())
    ]
    assert sizes == [
        (154_470, 1107), (162_557, 1089), (125_967, 554), (133_466, 840), (133_967, 813),
        (135_744, 746), (119_962, 897), (114_606, 893), (34_655, 283),
    ]


def test_principal_characters_speak_only_inside_their_own_play(corpus):
    speeches = _speeches(corpus)
    for (title, start), end, names in zip(data.PLAYS, _play_ends(), PRINCIPALS):
        theirs = [offset for offset, speaker in speeches if speaker in names]
        assert len(theirs) >= 40, title  # they do speak: the check below is not empty
        assert start <= min(theirs) and max(theirs) < end, title


def test_adjacent_plays_share_almost_no_named_characters(corpus):
    # Named characters are in capitals; "Messenger", "Servant", "First Citizen" are not.
    casts = [set() for _ in data.PLAYS]
    for offset, speaker in _speeches(corpus):
        if speaker.isupper():
            casts[[title for title, _ in data.PLAYS].index(data.play_of(offset))].add(speaker)
    assert min(len(cast) for cast in casts) >= 10
    shared = {
        (data.PLAYS[k][0], data.PLAYS[k + 1][0]): casts[k] & casts[k + 1] for k in range(8)
    }
    # The Duchess of York of Richard II is not the one of Richard III; Montague and the
    # Prince of Verona are not Henry VI's Marquess of Montague and Prince Edward.
    assert {pair: names for pair, names in shared.items() if names} == {
        ("Richard III", "Richard II"): {"DUCHESS OF YORK"},
        ("Romeo and Juliet", "Henry VI Part 3"): {"MONTAGUE", "PRINCE"},
    }


def test_play_of_at_the_edges_of_each_play():
    assert data.play_of(0) == "Coriolanus"
    assert data.play_of(data.DATA_N_CHARS - 1) == "The Tempest"
    for (before, _), (title, start) in zip(data.PLAYS, data.PLAYS[1:]):
        assert data.play_of(start - 1) == before
        assert data.play_of(start) == title


@pytest.mark.parametrize("offset", [-1, data.DATA_N_CHARS, 10**9])
def test_play_of_refuses_an_offset_outside_the_corpus(offset):
    with pytest.raises(ValueError, match=r"outside Tiny Shakespeare \(0\.\.1115393\)"):
        data.play_of(offset)


def test_play_spans_of_the_whole_corpus_are_the_plays():
    spans = data.play_spans(0, data.DATA_N_CHARS)
    assert spans == [(title, start, end) for (title, start), end in zip(data.PLAYS, _play_ends())]


def test_play_spans_of_the_validation_split():
    assert int(0.9 * data.DATA_N_CHARS) == VAL_START
    assert data.play_spans(VAL_START, data.DATA_N_CHARS) == [
        ("The Taming of the Shrew", VAL_START, 1_080_739),
        ("The Tempest", 1_080_739, data.DATA_N_CHARS),
    ]


def test_play_spans_are_clipped_to_the_range():
    richard_iii = 154_470
    assert data.play_spans(10, 20) == [("Coriolanus", 10, 20)]
    assert data.play_spans(richard_iii - 1, richard_iii + 1) == [
        ("Coriolanus", richard_iii - 1, richard_iii), ("Richard III", richard_iii, richard_iii + 1),
    ]
    assert data.play_spans(richard_iii, richard_iii + 1) == [("Richard III", richard_iii, richard_iii + 1)]
    assert data.play_spans(richard_iii - 1, richard_iii) == [("Coriolanus", richard_iii - 1, richard_iii)]
    assert data.play_spans(500, 500) == []
    spans = data.play_spans(100_000, 900_000)
    assert [title for title, _, _ in spans] == list(TITLES[:7])
    assert spans[0][1] == 100_000 and spans[-1][2] == 900_000
    assert all(a[2] == b[1] for a, b in zip(spans, spans[1:]))  # no gaps, no overlaps


@pytest.mark.parametrize("start, end", [(-1, 10), (10, 5), (0, data.DATA_N_CHARS + 1)])
def test_play_spans_refuses_a_range_outside_the_corpus(start, end):
    with pytest.raises(ValueError, match="not a range of Tiny Shakespeare"):
        data.play_spans(start, end)
