"""Tokenized training data: prepared once, cached on disk as memory-mapped numpy arrays, served in batches.

:func:`prepare_data` loads the corpus, splits it, trains the tokenizer on the training split (every k-th
piece of a large one) and tokenizes both splits. The result is cached in ``<cache>/<key>/`` where the key
is a hash of the text and of every setting that changes the tokens, so a second run (or a second optimizer
in ``memopt compare``) starts at once and an edited file is never served stale.

:class:`TokenBatches` cuts the training tokens into non-overlapping blocks of ``seq_len`` tokens and serves
them in an order shuffled once per epoch. Batch ``k`` is a pure function of ``(seed, k)``, so the data
position of a run is just its microbatch counter and a resumed run sees exactly the batches an
uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from memopt.harness.train import corpus as corpus_lib
from memopt.harness.train.errors import ConfigError, DataError
from memopt.harness.train.tokenizer import build_tokenizer, eos_id

#: Bump when the cached files' layout or the tokenization changes.
CACHE_FORMAT = 1
#: The BPE is trained on at most about this many characters of the training split: every k-th piece of a
#: larger split (k = ceil(characters / this)), so a 26 MB corpus trains its tokenizer in seconds.
BPE_SAMPLE_CHARS = 8_000_000


@dataclass(frozen=True)
class DataConfig:
    """What text to use and how to tokenize it.

    Attributes:
        path: ``--data``: a text file, a JSON Lines file, or a directory; None for the default corpus.
        tokenizer: ``"bpe"`` (trained on the training split) or ``"byte"``.
        vocab_size: BPE vocabulary size (ignored for ``"byte"``).
        val_fraction: share of the text held out for validation.
        cache_dir: where tokenized data is cached; None for ``$MEMOPT_CACHE_DIR`` or ``~/.cache/memopt``.
    """

    path: str | None = None
    tokenizer: str = "bpe"
    vocab_size: int = 2048
    val_fraction: float = 0.05
    cache_dir: str | None = None


@dataclass
class PreparedData:
    """Tokenized splits and the tokenizer that made them."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: Tokenizer
    key: str
    meta: dict

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can produce."""
        return self.tokenizer.get_vocab_size()


def default_cache_dir() -> Path:
    """``$MEMOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/memopt``, else ``~/.cache/memopt``."""
    if os.environ.get("MEMOPT_CACHE_DIR"):
        return Path(os.environ["MEMOPT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memopt"


def bpe_sample_every(train_pieces: list[corpus_lib.Piece]) -> int:
    """Every how many training pieces the BPE trains on (1: all; see :data:`BPE_SAMPLE_CHARS`)."""
    characters = sum(len(p.text) for p in train_pieces)
    return max(1, -(-characters // BPE_SAMPLE_CHARS))


def _cache_key(config: DataConfig, train_hash: str, val_hash: str, sample_every: int = 1) -> str:
    settings = {
        "format": CACHE_FORMAT,
        "tokenizer": config.tokenizer,
        "vocab_size": config.vocab_size if config.tokenizer == "bpe" else None,
        "train": train_hash,
        "val": val_hash,
    }
    if config.tokenizer == "bpe" and sample_every > 1:  # named only when used: smaller corpora keep their keys
        settings["bpe_sample_every"] = sample_every
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _tokenize(tokenizer: Tokenizer, pieces: list[corpus_lib.Piece], dtype: np.dtype) -> np.ndarray:
    """Encode pieces into one token stream, with EOS after each document's last piece."""
    eos = eos_id(tokenizer)
    parts = []
    for start in range(0, len(pieces), 256):  # in chunks, so a large corpus's encodings never all live at once
        chunk = pieces[start : start + 256]
        for piece, encoding in zip(chunk, tokenizer.encode_batch([p.text for p in chunk]), strict=True):
            parts.append(np.asarray(encoding.ids, dtype=dtype))
            if piece.ends_document:
                parts.append(np.asarray([eos], dtype=dtype))
    return np.concatenate(parts)


def prepare_data(config: DataConfig) -> PreparedData:
    """Load, split, tokenize and cache the data of ``config``; reuse the cache when it is there.

    Raises:
        DataError: the text is missing or empty, or too small to split.
        ConfigError: the tokenizer settings are invalid.
    """
    corpus = corpus_lib.load_corpus(config.path)
    train_pieces, val_pieces = corpus_lib.split_corpus(corpus, config.val_fraction)
    sample_every = bpe_sample_every(train_pieces)
    key = _cache_key(config, corpus_lib.fingerprint(train_pieces), corpus_lib.fingerprint(val_pieces), sample_every)
    cache_root = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    entry = cache_root / key
    if not (entry / "meta.json").exists():
        _build_entry(config, corpus, train_pieces, val_pieces, key, entry)
    data = _load_entry(entry, key)
    if corpus.info:  # a built-in corpus: its version, hash and whether the hash is the recorded one
        data.meta["corpus_info"] = dict(corpus.info)
    return data


def _build_entry(
    config: DataConfig,
    corpus: corpus_lib.Corpus,
    train_pieces: list[corpus_lib.Piece],
    val_pieces: list[corpus_lib.Piece],
    key: str,
    entry: Path,
) -> None:
    """Tokenize into a temporary folder beside ``entry`` and rename it into place (atomic: of two runs
    that build the same entry at once, the first rename wins and the other's copy is discarded)."""
    sample = train_pieces[:: bpe_sample_every(train_pieces)]
    tokenizer = build_tokenizer(config.tokenizer, (p.text for p in sample), config.vocab_size)
    dtype = _token_dtype(tokenizer.get_vocab_size())
    train = _tokenize(tokenizer, train_pieces, dtype)
    val = _tokenize(tokenizer, val_pieces, dtype)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
    try:
        tokenizer.save(str(tmp / "tokenizer.json"))
        train.tofile(tmp / "train.bin")
        val.tofile(tmp / "val.bin")
        meta = {
            "format": CACHE_FORMAT,
            "key": key,
            "corpus": corpus.name,
            "documents": len(corpus.documents),
            "characters": corpus.num_chars,
            "train_pieces": len(train_pieces),
            "val_pieces": len(val_pieces),
            "config": {k: v for k, v in asdict(config).items() if k != "cache_dir"},
            "vocab_size": tokenizer.get_vocab_size(),
            "dtype": dtype.name,
            "train_tokens": int(train.size),
            "val_tokens": int(val.size),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, entry)
        except OSError:
            if not (entry / "meta.json").exists():  # not a concurrent writer that got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_entry(entry: Path, key: str) -> PreparedData:
    meta = json.loads((entry / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    train = np.memmap(entry / "train.bin", dtype=dtype, mode="r")
    val = np.memmap(entry / "val.bin", dtype=dtype, mode="r")
    tokenizer = Tokenizer.from_file(str(entry / "tokenizer.json"))
    return PreparedData(train=train, val=val, tokenizer=tokenizer, key=key, meta=meta)


class TokenBatches:
    """Non-overlapping blocks of ``seq_len`` tokens, reshuffled every epoch, served by microbatch index.

    Args:
        tokens: the token stream (a memory-mapped array).
        seq_len: tokens per sequence.
        batch_size: sequences per microbatch.
        seed: seed of the epoch permutations.
        shuffle: False serves blocks in order (used for validation).
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, shuffle: bool = True):
        self.num_blocks = len(tokens) // seq_len
        self.blocks = tokens[: self.num_blocks * seq_len].reshape(self.num_blocks, seq_len)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self._epoch = -1
        self._order = torch.arange(self.num_blocks)

    @property
    def tokens_per_batch(self) -> int:
        """Exact number of input tokens in one microbatch."""
        return self.batch_size * self.seq_len

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self.shuffle and epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(self.num_blocks, generator=generator)
            self._epoch = epoch
        return self._order

    def batch(self, index: int) -> torch.Tensor:
        """Microbatch ``index`` (0-based over the whole run) as a ``(batch_size, seq_len)`` int64 tensor."""
        rows = []
        for i in range(index * self.batch_size, (index + 1) * self.batch_size):
            epoch, position = divmod(i, self.num_blocks)
            rows.append(int(self._permutation(epoch)[position]))
        return torch.from_numpy(self.blocks[rows].astype(np.int64))

    def epoch_of(self, index: int) -> float:
        """How many passes over the data microbatch ``index`` completes (fractional)."""
        return (index + 1) * self.batch_size / self.num_blocks


def check_sizes(data: PreparedData, seq_len: int, batch_size: int) -> None:
    """Raise :class:`DataError` if a split is too small for one training batch or one validation sequence."""
    if seq_len < 2:
        raise ConfigError(f"--seq-len {seq_len}: must be at least 2 (the model predicts token t+1 from t).")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1.")
    name = data.meta["corpus"]
    if len(data.train) < seq_len * batch_size:
        raise DataError(
            f"--data {name}: the training split has {len(data.train)} tokens, fewer than one batch of "
            f"{batch_size} x {seq_len} tokens. Give more text, or lower --batch-size or --seq-len."
        )
    if len(data.val) < seq_len:
        raise DataError(
            f"--data {name}: the validation split has {len(data.val)} tokens, fewer than one sequence of "
            f"{seq_len}. Give more text, raise --val-fraction, or lower --seq-len."
        )
