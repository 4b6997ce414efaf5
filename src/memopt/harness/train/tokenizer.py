"""Tokenizers built with the ``tokenizers`` library: a BPE trained on the training split, or plain bytes.

Both are byte-level (GPT-2 style pre-tokenization over the 256 byte symbols), so any UTF-8 text encodes
without unknown tokens. Id 0 is the end-of-document token :data:`EOS`.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from memopt.harness.train.errors import ConfigError

EOS = "<|endoftext|>"
KINDS = ("bpe", "byte")
#: The 256 byte symbols plus EOS: the smallest vocabulary a byte-level tokenizer can have.
MIN_VOCAB = 257


def _byte_level(model: models.Model) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE tokenizer of at most ``vocab_size`` tokens on ``texts``.

    The vocabulary can come out smaller when the text has fewer distinct merges; read the real size with
    ``tokenizer.get_vocab_size()``.

    Raises:
        ConfigError: ``vocab_size`` is below :data:`MIN_VOCAB`.
    """
    if vocab_size < MIN_VOCAB:
        raise ConfigError(
            f"--vocab-size {vocab_size}: a byte-level BPE needs at least {MIN_VOCAB} tokens (256 bytes + "
            "end-of-document); use e.g. --vocab-size 2048, or --tokenizer byte."
        )
    tokenizer = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def byte_tokenizer() -> Tokenizer:
    """A tokenizer whose tokens are single bytes (vocabulary of 257: EOS then the 256 byte symbols)."""
    vocab = {EOS: 0}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tokenizer = _byte_level(models.BPE(vocab=vocab, merges=[]))
    tokenizer.add_special_tokens([EOS])
    return tokenizer


def build_tokenizer(kind: str, texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Build the tokenizer named ``kind`` (``"bpe"`` trained on ``texts``, or ``"byte"``)."""
    if kind == "bpe":
        return train_bpe(texts, vocab_size)
    if kind == "byte":
        return byte_tokenizer()
    from memopt.harness.train.choices import check_choice

    check_choice("--tokenizer", kind, KINDS, unknown="tokenizer")
    raise AssertionError(f"tokenizer kind {kind!r} is listed in KINDS but has no builder")


def eos_id(tokenizer: Tokenizer) -> int:
    """Id of the end-of-document token."""
    token_id = tokenizer.token_to_id(EOS)
    if token_id is None:
        raise ConfigError(f"the tokenizer has no {EOS!r} token; it was not built by memopt.")
    return token_id
