"""Training text: the built-in corpora, the user's files, and a deterministic train/validation split.

A corpus is a list of documents (strings). Nothing is ever downloaded; the built-in corpora are text that
is installed wherever memopt is (``--data builtin:NAME``, :data:`BUILTIN_CORPORA`):

* ``sympy`` (the default): the Python source of the installed SymPy package (a dependency of torch, so it
  is on every machine with memopt), every ``*.py`` file in sorted order, one document per file: code with
  long English docstrings and doctests, about 26 million characters and 9 million tokens with the default
  2048-token BPE, enough that ten default ``memopt compare`` budgets stay within one pass over the data.
  The text is fixed by SymPy's version; :data:`RECORDED_HASHES` holds its SHA-256 per version, and a
  recorded version whose files differ (an edited install) is refused.
* ``python-reference``: the Python language reference that the standard library ships in
  :mod:`pydoc_data.topics` (about 465 KB of prose; it changes a little between Python versions). Small and
  quick to tokenize, for tests; too small for long runs (a few passes per default budget).

``--data PATH`` takes a text file, a JSON Lines file (one object per line with a ``"text"`` field), or a
directory of such files.

The split cuts every document into pieces of a few KB at line boundaries and sends every ``period``-th piece
(``period = round(1 / val_fraction)``) to validation. It depends only on the text, so it is the same on
every machine and every run, and the validation set is spread over the whole corpus instead of being its
tail.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from memopt.harness.train.choices import closest
from memopt.harness.train.errors import ConfigError, DataError

#: Suffixes read from a directory given as ``--data``.
TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
DEFAULT_CORPUS_NAME = "pydoc_data.topics"
#: ``--data builtin:NAME`` selects a built-in corpus
BUILTIN_PREFIX = "builtin:"
#: the corpus used without ``--data``
DEFAULT_BUILTIN = "sympy"

#: SHA-256 of each built-in corpus's documents (:func:`documents_sha256`) per version of its source, and of
#: its default split (``val_fraction`` 0.05, :func:`fingerprint` of each side). A recorded version whose text
#: differs is refused; an unrecorded one is used and reported as unverified.
RECORDED_HASHES: dict[str, dict[str, dict[str, str]]] = {
    "sympy": {
        "1.14.0": {
            "documents": "bc9bdfc2e0cdd06582ba4721fe87f47e9b3a122f42af02324c9bf57306556b46",
            "train": "a7995307213bef6546f2e582702208498b93e755ace5d5660ea70fd89ba8f451",
            "val": "419d569d9449c62415206b0ba1d58ee4a982a009de6586783d6f15e681f3e722",
        },
    },
}


@dataclass(frozen=True)
class Corpus:
    """Documents of text with a name saying where they came from.

    Attributes:
        name: where the text came from (shown in tables and ``summary.json``).
        documents: the texts.
        info: for built-in corpora, ``builtin`` (its name), ``version`` (of the package or Python that
            ships it), ``sha256`` (:func:`documents_sha256`) and ``verified`` (the hash matches the one
            recorded for that version; None if no hash is recorded for it).
    """

    name: str
    documents: list[str]
    info: dict = field(default_factory=dict, compare=False)

    @property
    def num_chars(self) -> int:
        """Total number of characters over all documents."""
        return sum(len(d) for d in self.documents)


@dataclass(frozen=True)
class Piece:
    """A contiguous piece of one document; ``ends_document`` marks the document's last piece."""

    text: str
    ends_document: bool


def python_reference_corpus() -> Corpus:
    """The Python language reference shipped with the standard library, one document per topic."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    documents = [topics[key] for key in sorted(topics)]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    info = {"builtin": "python-reference", "version": sys.version.split()[0]}
    return Corpus(name=f"{DEFAULT_CORPUS_NAME} (Python {version})", documents=documents, info=info)


def sympy_corpus() -> Corpus:
    """The source of the installed SymPy package: every ``*.py`` file, sorted by path, one document each.

    Files are decoded from their exact bytes (no newline translation), so the text depends only on
    SymPy's version.

    Raises:
        DataError: SymPy is not installed, or its files differ from those recorded for its version.
    """
    try:
        import sympy
    except ImportError as exc:  # a dependency of torch, so this is a broken install
        raise DataError(
            "the default corpus is the source of the sympy package, which is not installed: "
            "`pip install sympy`, or give your own text with --data PATH."
        ) from exc
    root = Path(sympy.__file__).parent
    files = sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix())
    documents = [d for d in (p.read_bytes().decode("utf-8") for p in files) if d.strip()]
    info = {"builtin": "sympy", "version": sympy.__version__}
    return Corpus(name=f"sympy {sympy.__version__} source", documents=documents, info=info)


#: ``--data builtin:NAME``: the built-in corpora by name
BUILTIN_CORPORA = {"sympy": sympy_corpus, "python-reference": python_reference_corpus}


def documents_sha256(documents: list[str]) -> str:
    """SHA-256 of the documents' text and boundaries (independent of any split)."""
    digest = hashlib.sha256()
    for document in documents:
        data = document.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def builtin_corpus(name: str) -> Corpus:
    """The built-in corpus ``name``, its hash checked against :data:`RECORDED_HASHES`.

    Raises:
        ConfigError: unknown name.
        DataError: the text differs from the one recorded for its version.
    """
    if name not in BUILTIN_CORPORA:
        raise ConfigError(
            f"--data {BUILTIN_PREFIX}{name}: unknown built-in corpus{closest(name, BUILTIN_CORPORA)}; choose "
            f"one of {', '.join(BUILTIN_PREFIX + n for n in BUILTIN_CORPORA)}, or give a file or directory."
        )
    corpus = BUILTIN_CORPORA[name]()
    sha = documents_sha256(corpus.documents)
    recorded = RECORDED_HASHES.get(name, {}).get(corpus.info["version"])
    if recorded is not None and recorded["documents"] != sha:
        raise DataError(
            f"--data {BUILTIN_PREFIX}{name}: the installed text ({corpus.name}) differs from the released "
            f"{corpus.info['version']} (SHA-256 {sha[:16]}..., recorded {recorded['documents'][:16]}...); "
            "the install was modified. Reinstall it, or give your own text with --data PATH."
        )
    corpus.info.update(sha256=sha, verified=None if recorded is None else True)
    return corpus


def default_corpus() -> Corpus:
    """The corpus used without ``--data``: :data:`DEFAULT_BUILTIN`."""
    return builtin_corpus(DEFAULT_BUILTIN)


def load_corpus(path: str | Path | None) -> Corpus:
    """Load the default corpus (``path`` is None), a built-in one (``builtin:NAME``) or the user's text.

    Raises:
        DataError: the path does not exist, holds no readable text, or a JSON Lines record is malformed.
        ConfigError: an unknown built-in corpus.
    """
    if path is None:
        return default_corpus()
    if isinstance(path, str) and path.startswith(BUILTIN_PREFIX):
        return builtin_corpus(path[len(BUILTIN_PREFIX) :])
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
