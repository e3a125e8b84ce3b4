"""gptlib.tokenizers: words, byte-level BPE, GPT-2's tokenizer (against tiktoken), windows."""

import random

import pytest
import tiktoken
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken._educational import bpe_train
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str

from gptlib.data import DataError, data_dir, load_shakespeare
from gptlib.tokenizers import (
    ENDOFTEXT,
    GPT2_PATTERN,
    GPT4_PATTERN,
    BPETokenizer,
    TokenizerFileError,
    TokenWindows,
    WordTokenizer,
    gpt2_files,
    gpt2_tokenizer,
    merge,
)

ADVERSARIAL = [
    "", " ", "héllo wörld", "日本語のテキストです。", "Привет, мир!", "مرحبا بالعالم", "नमस्ते दुनिया",
    "😀👍🏽 a family: 👨‍👩‍👧", "🏳️‍🌈", "1234567890123456789 3.14159 1,000,000",
    "   lots   of\n\n\n  space \t\t",
    "trailing spaces   ", "\n", "I'm you're we've he'd she'll it's DON'T 'tis o'er", "<|endoftext|>",
    "e\u0301 n\u0303 combining", "\r\n\r\nwindows\r\n", "\x00nul\x00", "ﷺ", "a" * 2000,
    "\u200b\ufeff",
    "ΑΒΓ αβγ", "x=[1,2,3];y={'a':None}", "    def f(x):\n        return x  # indent",
]


@pytest.fixture(scope="module")
def text():
    return load_shakespeare()


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def reference():
    """tiktoken's "gpt2" encoding, built offline from the same two files (no download)."""
    encoder_json, vocab_bpe = gpt2_files()
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe),
                                            encoder_json_file=str(encoder_json))
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257)


# ---------------------------------------------------------------- words


def test_the_word_tokenizer_gives_back_every_text_of_known_words():
    tok = WordTokenizer("It's a truth, universally  acknowledged.\nIt is!")
    text = "It's a truth.\n\nIt is, universally  acknowledged!"
    assert tok.decode(tok.encode(text)) == text
    pieces = [tok.itos[i] for i in tok.encode("It's")]
    assert pieces == ["It", "'", "s"]  # not "It' s" on the way back
    assert tok.decode(tok.encode("It's")) == "It's"


def test_unknown_words_become_unk_and_documents_are_separated():
    tok = WordTokenizer("to be or not to be")
    ids = tok.encode("to be or to sleep")
    assert tok.decode(ids) == "to be or to <|unk|>"
    assert tok.unknown("to sleep, to dream") == ["sleep", ",", "dream"]
    ids = tok.encode_documents(["to be", "not to be"])
    assert ids.count(tok.stoi[ENDOFTEXT]) == 1 and tok.decode(ids) == "to be<|endoftext|>not to be"
    for bad in (tok.vocab_size, -1):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            tok.decode([0, bad])


# ---------------------------------------------------------------- BPE training


def test_merge_replaces_pairs_left_to_right():
    assert merge([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]
    assert merge([1, 2], (2, 1), 9) == [1, 2]


def test_the_first_merges_of_a_small_text():
    tok = BPETokenizer.train("aaab aaab aaab", 258, pattern=None)
    # "a a" is the most frequent pair (6 times: twice in each "aaa"). After it the text is
    # [aa a b ' ' aa a b ...]: "aa a" and "a b" tie at 3, and the pair seen first wins.
    assert [tok.vocab[i] for i in (256, 257)] == [b"aa", b"aaa"]
    assert tok.merge_counts == [6, 3]
    assert tok.encode("aaab") == [257, ord("b")]


@pytest.mark.parametrize("pattern,chars,vocab", [(GPT2_PATTERN, 20_000, 330), (GPT4_PATTERN, 10_000, 300)])
def test_the_trainer_learns_the_reference_trainers_merges_in_order(text, pattern, chars, vocab):
    part = text[:chars]
    expected = bpe_train(part, vocab, pattern, visualise=None)  # bytes -> rank, in order
    ours = BPETokenizer.train(part, vocab, pattern=pattern)
    assert [(ours.vocab[i], i) for i in sorted(ours.vocab)] == list(expected.items())


def test_ties_go_to_the_pair_seen_first_like_the_reference():
    part = "xy ab cd xy ab cd ef gh ef gh zz"
    expected = bpe_train(part, 266, GPT2_PATTERN, visualise=None)
    ours = BPETokenizer.train(part, 266)
    assert [(ours.vocab[i], i) for i in sorted(ours.vocab)] == list(expected.items())


def test_a_text_that_runs_out_of_pairs_gives_a_smaller_vocabulary():
    tok = BPETokenizer.train("abab", 1000, pattern=None)
    assert len(tok.merges) == 2 and tok.encode("abab") == [257]
    with pytest.raises(ValueError, match="at least 256"):
        BPETokenizer.train("abc", 255)


def test_merges_never_cross_a_chunk_boundary():
    tok = BPETokenizer.train("the cat the cat the cat", 300)
    assert all(b" " not in token[1:] for token in tok.vocab.values())
    glued = BPETokenizer.train("the cat the cat the cat", 300, pattern=None)
    assert any(b" " in token[1:] for token in glued.vocab.values())


def test_special_tokens_split_the_training_text_into_documents_and_take_part_in_no_merge():
    docs = ["the cat sat", "on the mat", "the cat ran"] * 20
    text = ENDOFTEXT.join(docs)
    for pattern in (GPT2_PATTERN, None):
        tok = BPETokenizer.train(text, 400, pattern=pattern, special_tokens=[ENDOFTEXT])
        learned = [tok.vocab[new] for new in tok.merges.values()]
        assert not any(b"<" in t or b"|" in t or b">" in t for t in learned), pattern
        # the same merges as training on the documents with no special token between them
        apart = BPETokenizer.train("\n".join(docs), 400, pattern=pattern)
        assert not any(b"\n" in t for t in (apart.vocab[new] for new in apart.merges.values())) \
            or pattern is None
        assert tok.special_tokens == {ENDOFTEXT: tok.vocab_size - 1}
    glued = BPETokenizer.train(text, 400, pattern=None)  # without the split: merges eat into it
    assert any(b"<|" in glued.vocab[new] for new in glued.merges.values())


@pytest.mark.parametrize("special", [ENDOFTEXT, [""], ["<|a|>", "<|a|>"], [3]])
def test_special_tokens_for_training_must_be_distinct_strings(special):
    with pytest.raises(ValueError, match="special_tokens must be distinct non-empty strings"):
        BPETokenizer.train("some text", 300, special_tokens=special)


def pieces_of(text, seed=0):
    """The text in pieces of random lengths, from 1 character up."""
    rng, i = random.Random(seed), 0
    while i < len(text):
        n = rng.choice([1, 2, 3, 5, 17, 100, 1000])
        yield text[i:i + n]
        i += n


def test_encoding_a_stream_of_pieces_gives_the_tokens_of_the_whole(gpt2, text):
    head = text[:300_000]
    assert list(gpt2.encode_iterable(pieces_of(head))) == gpt2.encode(head)
    assert list(gpt2.encode_iterable(head.splitlines(keepends=True))) == gpt2.encode(head)
    # a special token cut in two, a false start of one, whitespace at the end
    doc = head[:5000] + ENDOFTEXT + head[5000:9000] + "<|endo x\n\n " + ENDOFTEXT + "  \n"
    for special in ("allow", "plain"):
        assert list(gpt2.encode_iterable(pieces_of(doc), special)) == gpt2.encode(doc, special)
    with pytest.raises(ValueError, match="special token"):
        list(gpt2.encode_iterable(pieces_of(doc)))
    with pytest.raises(ValueError, match="special must be one of"):
        gpt2.encode_iterable([doc], special="yes")  # at once, before any token is asked for
    assert list(gpt2.encode_iterable([])) == []


@pytest.mark.parametrize("pattern", [GPT4_PATTERN, None], ids=["gpt4", "no pattern"])
def test_a_trained_tokenizer_encodes_a_stream_like_the_whole(small_bpe, text, pattern):
    tok = BPETokenizer.train(text[:5_000], 300, pattern=pattern, special_tokens=[ENDOFTEXT])
    for doc in (text[:40_000], text[:3000] + ENDOFTEXT + "I'll  \n\n" + ENDOFTEXT + "<|end"):
        assert list(tok.encode_iterable(pieces_of(doc), "allow")) == tok.encode(doc, "allow")
    assert list(small_bpe.encode_iterable(pieces_of(text[:40_000]))) == small_bpe.encode(text[:40_000])


def test_a_corpus_larger_than_memory_streams_in_bounded_memory(gpt2, text):
    """Copies of a text read line by line: the memory held does not grow with their number."""
    import tracemalloc

    part = text[:100_000]
    tokens = len(gpt2.encode(part))  # also fills the chunk cache, which is bounded anyway

    def peak_memory(copies):
        tracemalloc.start()
        try:
            lines = (line for _ in range(copies) for line in part.splitlines(keepends=True))
            assert sum(1 for _ in gpt2.encode_iterable(lines)) > copies * (tokens - 1)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    one, four = peak_memory(1), peak_memory(4)
    assert four < one + 200_000, f"{one / 1e6:.2f} MB for one copy, {four / 1e6:.2f} MB for four"
    assert four < 1.5e6  # four copies' ids in a list would take 4 MB


# ---------------------------------------------------------------- round trips


@pytest.fixture(scope="module")
def small_bpe(text):
    return BPETokenizer.train(text[:30_000], 400, special_tokens=[ENDOFTEXT])


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_every_string_comes_back_from_a_trained_tokenizer(small_bpe, s):
    assert small_bpe.decode(small_bpe.encode(s, special="plain")) == s


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_every_string_encodes_as_tiktoken_does_and_comes_back(gpt2, reference, s):
    ids = gpt2.encode(s, special="plain")
    assert ids == reference.encode(s, disallowed_special=())
    assert gpt2.decode(ids) == s


@pytest.mark.parametrize("s", ADVERSARIAL)
def test_adversarial_strings(gpt2, reference, small_bpe, s):
    assert gpt2.encode(s, special="plain") == reference.encode(s, disallowed_special=())
    assert gpt2.decode(gpt2.encode(s, special="plain")) == s
    assert small_bpe.decode(small_bpe.encode(s, special="plain")) == s


def test_lone_surrogates_are_refused_clearly(gpt2):
    with pytest.raises(ValueError, match=r"lone surrogate U\+D800 at index 2"):
        gpt2.encode("ab\ud800c")
    with pytest.raises(ValueError, match="lone surrogate"):
        BPETokenizer.train("x\udfff", 300)


def test_decoding_half_a_character_gives_the_replacement_character(gpt2):
    ids = gpt2.encode("😀")
    assert len(ids) > 1 and gpt2.decode(ids[:1]) == "\ufffd"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        gpt2.decode([50257])


# ---------------------------------------------------------------- GPT-2 against tiktoken


def test_gpt2_encodes_all_of_tiny_shakespeare_like_tiktoken(gpt2, reference, text):
    ours = gpt2.encode(text)
    assert ours == reference.encode(text)
    assert len(ours) == 338_025 and gpt2.decode(ours) == text


def test_gpt2s_vocabulary_is_the_released_one(gpt2, reference):
    assert gpt2.vocab_size == 50_257 and len(gpt2.merges) == 50_000
    assert all(reference.decode_single_token_bytes(i) == gpt2.vocab[i] for i in range(50_256))


def test_special_tokens_refused_allowed_or_plain_as_the_caller_says(gpt2, reference):
    s = "Hi<|endoftext|>there"
    with pytest.raises(ValueError, match="special token '<|endoftext|>' at index 2"):
        gpt2.encode(s)
    assert gpt2.encode(s, special="allow") == reference.encode(s, allowed_special="all")
    assert 50256 in gpt2.encode(s, special="allow")
    assert gpt2.encode(s, special="plain") == reference.encode(s, disallowed_special=())
    assert 50256 not in gpt2.encode(s, special="plain")
    with pytest.raises(ValueError, match="special must be one of"):
        gpt2.encode(s, special="yes")


def test_gpt2s_files_are_checked(tmp_path, monkeypatch):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    encoder_json, vocab_bpe = gpt2_files()
    (folder / "encoder.json").write_bytes(encoder_json.read_bytes())
    (folder / "vocab.bpe").write_bytes(vocab_bpe.read_bytes()[:-10])  # cut short
    with pytest.raises(DataError, match="vocab.bpe is not GPT-2's vocab.bpe"):
        gpt2_tokenizer(folder)
    assert gpt2_files().__len__() == 2 and encoder_json.parent == data_dir() / "gpt2"


# ---------------------------------------------------------------- saving and loading


def test_a_saved_tokenizer_loads_back_the_same(gpt2, small_bpe, tmp_path):
    for tok in (small_bpe, gpt2):
        path = tok.save(tmp_path / "tok.bpe")
        back = BPETokenizer.load(path)
        assert back.merges == tok.merges and back.byte_ids == tok.byte_ids
        assert back.special_tokens == tok.special_tokens and back.pattern == tok.pattern
        assert back.encode("To be, or not to be: 😀") == tok.encode("To be, or not to be: 😀")
    assert path.read_text().startswith("gptlib-bpe 1\npattern ")


@pytest.mark.parametrize("content,message", [
    ("{\"not\": \"ours\"}\n", "not a gptlib BPE tokenizer"),
    ("gptlib-bpe 1\nmerge 1 2\n", "line 2"),
    ("gptlib-bpe 1\nmerge 1 999 256\n", "does not exist yet"),
    ("gptlib-bpe 1\npattern \"(\"\n", "line 2"),
    ("gptlib-bpe 1\nbytes 1 2 3\n", "256 distinct"),
    ("gptlib-bpe 1\nfoo bar\n", "unknown entry 'foo'"),
    ("gptlib-bpe 1\nspecial \"<|x|>\" 65\n", "an id of its own"),
])
def test_a_damaged_or_foreign_file_gets_one_clear_line(tmp_path, content, message):
    path = tmp_path / "bad.bpe"
    path.write_text(content)
    with pytest.raises(TokenizerFileError, match=message) as error:
        BPETokenizer.load(path)
    assert "\n" not in str(error.value)


def test_missing_and_binary_files_are_refused(tmp_path):
    with pytest.raises(TokenizerFileError, match="no tokenizer file"):
        BPETokenizer.load(tmp_path / "none.bpe")
    (tmp_path / "bin.bpe").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TokenizerFileError, match="not a tokenizer file"):
        BPETokenizer.load(tmp_path / "bin.bpe")


# ---------------------------------------------------------------- windows


def test_windows_side_by_side_and_every_window():
    tokens = list(range(11))  # 11 tokens, windows of 4 read 5
    side = TokenWindows(tokens, block_size=4)
    assert len(side) == 2
    assert [x.tolist() for x, _ in side] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert side[1][1].tolist() == [5, 6, 7, 8]  # the target: the input shifted by one
    every = TokenWindows(tokens, block_size=4, stride=1)
    assert len(every) == 7 and every[-1][1].tolist() == [7, 8, 9, 10]  # the last token is a target
    wide = TokenWindows(tokens, block_size=2, stride=5)
    assert len(wide) == 2 and [x.tolist() for x, _ in wide] == [[0, 1], [5, 6]]
    with pytest.raises(IndexError):
        side[2]


def test_a_text_shorter_than_one_window_is_refused():
    assert len(TokenWindows(range(5), block_size=4)) == 1
    with pytest.raises(ValueError, match="need 5 tokens; the text has 4"):
        TokenWindows(range(4), block_size=4)
    with pytest.raises(ValueError, match="must be positive"):
        TokenWindows(range(10), block_size=4, stride=0)


def test_windows_in_a_data_loader():
    windows = TokenWindows(torch.arange(1000), block_size=8, stride=8)
    loader = torch.utils.data.DataLoader(windows, batch_size=16, shuffle=False)
    batches = list(loader)
    assert len(windows) == 124 and len(batches) == 8
    x, y = batches[0]
    assert x.shape == (16, 8) and torch.equal(y, x + 1) and x[1, 0] == 8
