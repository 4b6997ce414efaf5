"""Training text: the default corpus, the user's files, and a deterministic train/validation split.

A corpus is a list of documents (strings). The default corpus is the Python language reference that the
standard library ships in :mod:`pydoc_data.topics` (about 465 KB of English prose with code examples), so it
is on every machine with Python and nothing is downloaded. ``--data PATH`` takes a text file, a JSON Lines
file (one object per line with a ``"text"`` field), or a directory of such files.

The split cuts every document into pieces of a few KB at line boundaries and sends every ``period``-th piece
(``period = round(1 / val_fraction)``) to validation. It depends only on the text, so it is the same on
every machine and every run, and the validation set is spread over the whole corpus instead of being its
tail.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from memopt.harness.train.errors import ConfigError, DataError

#: Suffixes read from a directory given as ``--data``.
TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
DEFAULT_CORPUS_NAME = "pydoc_data.topics"


@dataclass(frozen=True)
class Corpus:
    """Documents of text with a name saying where they came from."""

    name: str
    documents: list[str]

    @property
    def num_chars(self) -> int:
        """Total number of characters over all documents."""
        return sum(len(d) for d in self.documents)


@dataclass(frozen=True)
class Piece:
    """A contiguous piece of one document; ``ends_document`` marks the document's last piece."""

    text: str
    ends_document: bool


def default_corpus() -> Corpus:
    """The Python language reference shipped with the standard library, one document per topic."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    documents = [topics[key] for key in sorted(topics)]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Corpus(name=f"{DEFAULT_CORPUS_NAME} (Python {version})", documents=documents)


def load_corpus(path: str | Path | None) -> Corpus:
    """Load the default corpus (``path`` is None) or the user's text at ``path``.

    Raises:
        DataError: the path does not exist, holds no readable text, or a JSON Lines record is malformed.
    """
    if path is None:
        return default_corpus()
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(
            f"--data {path}: no such file or directory. Give a text file, a JSON Lines file with a "
            f"'text' field, or a directory of {', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES)} files."
        )
    if root.is_dir():
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in TEXT_SUFFIXES + JSONL_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise DataError(
                f"--data {path}: the directory holds no text files (looked for "
                f"{', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES)}, hidden files skipped). Add text files or "
                "point --data at a file."
            )
    else:
        files = [root]
    documents: list[str] = []
    for file in files:
        documents.extend(_read_file(file))
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise DataError(
            f"--data {path}: no text found (the files are empty or whitespace only). Give a file with text, "
            "or leave out --data to use the default corpus."
        )
    return Corpus(name=str(root), documents=documents)


def _read_file(file: Path) -> list[str]:
    """Documents of one file: the whole file for text, one per record for JSON Lines."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise DataError(f"--data: cannot read {file}: {exc.strerror}. Check the path and its permissions.") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"--data: {file} is not UTF-8 text (bad byte at offset {exc.start}). Convert it to UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {file.name}`."
        ) from exc
    if file.suffix.lower() not in JSONL_SUFFIXES:
        return [text]
    documents = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"--data: {file}:{lineno} is not valid JSON ({exc.msg}). Each line of a JSON Lines file "
                'must be one object such as {"text": "..."}.'
            ) from exc
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(
                f"--data: {file}:{lineno} has no string field 'text'. Each line must be an object such as "
                '{"text": "..."}.'
            )
        documents.append(record["text"])
    return documents


def _cut(document: str, size: int) -> list[str]:
    """Cut ``document`` into pieces of at most ``size`` characters, at a newline where there is one."""
    pieces = []
    start = 0
    while len(document) - start > size:
        end = document.rfind("\n", start + size // 2, start + size)
        end = start + size if end < 0 else end + 1
        pieces.append(document[start:end])
        start = end
    pieces.append(document[start:])
    return pieces


def piece_size(corpus: Corpus) -> int:
    """Characters per piece: about 1/200 of the corpus, between 128 and 16384, so there are many pieces."""
    return max(128, min(16384, corpus.num_chars // 200))


def split_corpus(corpus: Corpus, val_fraction: float) -> tuple[list[Piece], list[Piece]]:
    """Deterministic train/validation split: every ``round(1/val_fraction)``-th piece goes to validation.

    Args:
        corpus: the documents.
        val_fraction: share of pieces held out, in (0, 0.5].

    Returns:
        (train pieces, validation pieces), each in corpus order.

    Raises:
        ConfigError: ``val_fraction`` is out of range.
        DataError: the corpus is too small to give both splits.
    """
    if not 0.0 < val_fraction <= 0.5:
        raise ConfigError(f"--val-fraction {val_fraction}: must be in (0, 0.5], e.g. 0.05.")
    period = max(2, round(1.0 / val_fraction))
    size = piece_size(corpus)
    train: list[Piece] = []
    val: list[Piece] = []
    index = 0
    for document in corpus.documents:
        cut = _cut(document, size)
        for i, text in enumerate(cut):
            piece = Piece(text=text, ends_document=i == len(cut) - 1)
            (val if index % period == period - 1 else train).append(piece)
            index += 1
    if not train or not val:
        raise DataError(
            f"--data {corpus.name}: {corpus.num_chars} characters are too few to hold out a validation "
            f"split ({index} piece(s) of {size} characters, every {period}th goes to validation). Give more "
            "text or raise --val-fraction."
        )
    return train, val


def fingerprint(pieces: list[Piece]) -> str:
    """SHA-256 of the pieces' text and document boundaries."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece.text.encode("utf-8"))
        digest.update(b"\x00\x01" if piece.ends_document else b"\x00\x00")
    return digest.hexdigest()
