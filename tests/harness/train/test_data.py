"""Corpus loading, the deterministic split, tokenizers, the on-disk cache and batch order."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from memopt.harness.train import corpus as corpus_lib
from memopt.harness.train.data import DataConfig, TokenBatches, check_sizes, prepare_data
from memopt.harness.train.errors import ConfigError, DataError
from memopt.harness.train.tokenizer import EOS, build_tokenizer, byte_tokenizer, eos_id, train_bpe


def test_the_default_corpus_is_sympys_source_and_splits_the_same_on_every_machine():
    """The text and its split are fixed by sympy's version: the hashes recorded for 1.14.0 must match."""
    import sympy

    corpus = corpus_lib.default_corpus()
    assert corpus.name == f"sympy {sympy.__version__} source" and corpus.info["builtin"] == "sympy"
    assert corpus_lib.load_corpus(None).documents == corpus.documents
    assert corpus_lib.load_corpus("builtin:sympy").documents == corpus.documents
    recorded = corpus_lib.RECORDED_HASHES["sympy"].get(sympy.__version__)
    if recorded is None:
        pytest.skip(f"no hash recorded for sympy {sympy.__version__} (recorded: 1.14.0)")
    assert corpus.info["sha256"] == recorded["documents"] and corpus.info["verified"] is True
    train, val = corpus_lib.split_corpus(corpus, 0.05)
    assert corpus_lib.fingerprint(train) == recorded["train"]
    assert corpus_lib.fingerprint(val) == recorded["val"]
    # 26.2M characters: 9,201,976 training tokens with the 2048-token BPE (docs/results.md), > 5M
    assert (len(corpus.documents), corpus.num_chars, len(train), len(val)) == (1452, 26_152_445, 2409, 126)


def test_builtin_corpora_refuse_unknown_names_and_modified_text(monkeypatch):
    with pytest.raises(ConfigError, match=r"--data builtin:sympi: unknown built-in corpus \(did you mean 'sympy'"):
        corpus_lib.load_corpus("builtin:sympi")
    version = corpus_lib.python_reference_corpus().info["version"]
    monkeypatch.setitem(corpus_lib.RECORDED_HASHES, "python-reference", {version: {"documents": "0" * 64}})
    with pytest.raises(DataError, match=r"differs from the released .*the install was modified"):
        corpus_lib.load_corpus("builtin:python-reference")
    monkeypatch.setitem(corpus_lib.RECORDED_HASHES, "python-reference", {})
    assert corpus_lib.load_corpus("builtin:python-reference").info["verified"] is None  # unrecorded: unverified


def test_split_is_deterministic_disjoint_and_covers_the_text():
    corpus = corpus_lib.python_reference_corpus()
    train_a, val_a = corpus_lib.split_corpus(corpus, 0.05)
    train_b, val_b = corpus_lib.split_corpus(corpus_lib.python_reference_corpus(), 0.05)
    assert train_a == train_b and val_a == val_b
    assert corpus_lib.fingerprint(train_a) == corpus_lib.fingerprint(train_b)
    total = sum(len(p.text) for p in train_a + val_a)
    assert total == corpus.num_chars  # nothing dropped, nothing duplicated
    share = sum(len(p.text) for p in val_a) / total
    assert 0.02 < share < 0.1
    assert sum(p.ends_document for p in train_a + val_a) == len(corpus.documents)


def test_split_rejects_a_bad_fraction_and_too_little_text():
    with pytest.raises(ConfigError, match=r"--val-fraction 0.9: must be in \(0, 0.5\]"):
        corpus_lib.split_corpus(corpus_lib.python_reference_corpus(), 0.9)
    with pytest.raises(DataError, match="too few to hold out a validation split"):
        corpus_lib.split_corpus(corpus_lib.Corpus("one line", ["hello world"]), 0.05)


def test_bpe_tokenizer_is_deterministic_and_round_trips():
    texts = [p.text for p in corpus_lib.split_corpus(corpus_lib.python_reference_corpus(), 0.05)[0][:60]]
    first, second = train_bpe(texts, 600), train_bpe(texts, 600)
    assert first.to_str() == second.to_str()
    assert first.get_vocab_size() == 600
    assert eos_id(first) == 0 and first.id_to_token(0) == EOS
    sample = "def f(x):\n    return x ** 2  # café ✓\n"
    assert first.decode(first.encode(sample).ids) == sample


def test_byte_tokenizer_covers_every_byte():
    tokenizer = byte_tokenizer()
    assert tokenizer.get_vocab_size() == 257
    sample = "naïve ✓ \x00\n"
    ids = tokenizer.encode(sample).ids
    assert len(ids) == len(sample.encode("utf-8"))
    assert tokenizer.decode(ids) == sample


def test_tokenizer_errors_name_the_flag():
    with pytest.raises(ConfigError, match="--vocab-size 100: a byte-level BPE needs at least 257"):
        train_bpe(["text"], 100)
    with pytest.raises(ConfigError, match=r"--tokenizer 'bytes': unknown tokenizer \(did you mean 'byte'"):
        build_tokenizer("bytes", [], 0)


def test_prepare_data_caches_by_content_and_settings(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 400)
    config = DataConfig(path=str(text), vocab_size=300, cache_dir=str(tmp_path / "cache"))
    first = prepare_data(config)
    entry = tmp_path / "cache" / first.key
    stamp = os.stat(entry / "train.bin").st_mtime_ns
    again = prepare_data(config)
    assert again.key == first.key and os.stat(entry / "train.bin").st_mtime_ns == stamp  # reused
    assert isinstance(again.train, np.memmap)
    assert np.array_equal(np.asarray(again.train), np.asarray(first.train))
    assert first.meta["vocab_size"] == first.vocab_size <= 300

    byte = prepare_data(DataConfig(path=str(text), tokenizer="byte", cache_dir=str(tmp_path / "cache")))
    assert byte.key != first.key and byte.vocab_size == 257
    text.write_text("The quick brown fox jumps over the lazy cat.\n" * 400)
    assert prepare_data(config).key != first.key  # edited text is never served stale
    tokens = byte.meta["train_tokens"] + byte.meta["val_tokens"]
    documents = 1
    assert tokens == len(("The quick brown fox jumps over the lazy dog.\n" * 400).encode()) + documents


def test_two_runs_preparing_the_same_data_at_once_both_get_it(tmp_path):
    """The cache entry is built in a temporary folder and renamed into place: of two concurrent builders
    one wins, the other's copy is discarded, and both load the same tokens."""
    from concurrent.futures import ThreadPoolExecutor

    text = tmp_path / "text.txt"
    text.write_text("".join(f"line {i} of some text to tokenize\n" for i in range(3000)))
    config = DataConfig(path=str(text), vocab_size=300, cache_dir=str(tmp_path / "cache"))
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: prepare_data(config), range(2))
    assert first.key == second.key
    assert np.array_equal(np.asarray(first.train), np.asarray(second.train))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.key]  # no temporary folder left


def test_a_large_corpus_trains_its_bpe_on_a_sample():
    from memopt.harness.train.data import BPE_SAMPLE_CHARS, bpe_sample_every

    piece = corpus_lib.Piece("x" * 1000, False)
    assert bpe_sample_every([piece] * 10) == 1
    assert bpe_sample_every([piece] * (3 * BPE_SAMPLE_CHARS // 1000)) == 3


def test_jsonl_and_directories(tmp_path):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha " * 50)
    (folder / "sub" / "b.jsonl").write_text(
        json.dumps({"text": "beta " * 50}) + "\n\n" + json.dumps({"text": "gamma " * 50, "id": 3}) + "\n"
    )
    (folder / ".hidden.txt").write_text("never read")
    (folder / "notes.bin").write_bytes(b"\xff\xfe")
    corpus = corpus_lib.load_corpus(folder)
    assert corpus.documents == ["alpha " * 50, "beta " * 50, "gamma " * 50]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\nnot json\n', r"bad\.jsonl:2 is not valid JSON"),
        ('{"body": "no text field"}\n', r"bad\.jsonl:1 has no string field 'text'"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(DataError, match=message):
        corpus_lib.load_corpus(bad)


def test_missing_empty_and_undecodable_data(tmp_path):
    with pytest.raises(DataError, match=r"--data .*nope\.txt: no such file or directory"):
        corpus_lib.load_corpus(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("  \n\n")
    with pytest.raises(DataError, match=r"empty\.txt: no text found"):
        corpus_lib.load_corpus(tmp_path / "empty.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="the directory holds no text files"):
        corpus_lib.load_corpus(tmp_path / "folder")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt is not UTF-8 text .*Convert it to UTF-8"):
        corpus_lib.load_corpus(tmp_path / "latin1.txt")


def test_data_too_small_for_a_batch(tmp_path):
    text = tmp_path / "small.txt"
    text.write_text("a few words of text.\n" * 200)
    data = prepare_data(DataConfig(path=str(text), tokenizer="byte", cache_dir=str(tmp_path / "cache")))
    with pytest.raises(DataError, match=r"fewer than one batch of 64 x 128 tokens\. Give more text, or lower"):
        check_sizes(data, seq_len=128, batch_size=64)
    with pytest.raises(ConfigError, match="--seq-len 1: must be at least 2"):
        check_sizes(data, seq_len=1, batch_size=1)


def test_batches_are_a_pure_function_of_seed_and_index():
    tokens = np.arange(1000, dtype=np.uint16)
    batches = TokenBatches(tokens, seq_len=10, batch_size=7, seed=3)
    again = TokenBatches(tokens, seq_len=10, batch_size=7, seed=3)
    assert torch.equal(batches.batch(5), again.batch(5))
    assert torch.equal(batches.batch(20), TokenBatches(tokens, 10, 7, seed=3).batch(20))  # no hidden state
    assert not torch.equal(batches.batch(0), TokenBatches(tokens, 10, 7, seed=4).batch(0))
    # one epoch serves every block exactly once (100 blocks; 7 does not divide 100, batches straddle epochs)
    rows = torch.cat([batches.batch(i) for i in range(15)])[:100]
    assert sorted(rows[:, 0].tolist()) == list(range(0, 1000, 10))
    assert batches.batch(0).dtype == torch.int64 and batches.tokens_per_batch == 70
