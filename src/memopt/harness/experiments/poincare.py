"""Poincaré embeddings of the WordNet mammal closure: Riemannian SGD vs Riemannian Adam / AMSGrad.

Claim checked (Bécigneul & Ganea, ICLR 2019, abstract): on WordNet embeddings in the Poincaré ball the
Riemannian adaptive methods converge faster and to a lower training loss than Riemannian SGD. Setting
(Nickel & Kiela 2017; :mod:`memopt.harness.problems.poincare`): the mammal closure (1,180 nodes, 6,540
edges, :func:`memopt.harness.problems.wordnet.mammal_closure`), dimensions 2, 5 and 10, softmax loss with
10 uniform negatives, batches of 50 edges, a burn-in of ``burnin`` epochs at lr / 10, then a constant lr.
Optimizers (same seeds, initialisations, batches and negatives for all): memopt's ``RiemannianSGD``
(the Nickel & Kiela update), ``RiemannianAdam``, ``RiemannianAMSGrad`` and, when it is installed, geoopt's
``RiemannianAdam`` as the reference. Reported: training loss per epoch, mean rank and MAP of the
reconstruction during and after training, wall time; the figure shows the curves and the 2-D embedding.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from memopt.harness.experiments.common import Options, Study, StudyResult, figure, mean_and_se
from memopt.harness.problems.poincare import NegativeSampler, PoincareEmbedding, batches, reconstruction
from memopt.harness.problems.wordnet import Closure, mammal_closure, subtree_closure
from memopt.riemannian import RiemannianAdam, RiemannianAMSGrad, RiemannianSGD

#: learning rates, from a small sweep on dim 5, 30 epochs, seed 0 (docs/experiments.md); RSGD's Riemannian
#: gradient is the Euclidean one times (1 - ||x||^2)^2 / 4 <= 1/4, and the loss is a mean over 100 edges
LEARNING_RATES = {"RSGD": 30.0, "RAdam": 0.05, "RAMSGrad": 0.05, "geoopt RAdam": 0.05}


@dataclass(frozen=True)
class Settings:
    dims: tuple[int, ...]
    epochs: int
    burnin: int
    #: None: the mammal closure; else the closure below this synset (the quick run uses primates)
    subtree: str | None = None
    batch_size: int = 100
    negatives: int = 10
    eval_every: int = 10


FULL = Settings(dims=(2, 5, 10), epochs=40, burnin=10)
QUICK = Settings(dims=(2, 5), epochs=4, burnin=1, eval_every=2, subtree="primate.n.02")


def _geoopt_adam(model: PoincareEmbedding, lr: float) -> torch.optim.Optimizer:
    import geoopt

    weight = geoopt.ManifoldParameter(model.weight.detach().clone(), manifold=geoopt.PoincareBall())
    model.weight = weight
    return geoopt.optim.RiemannianAdam([weight], lr=lr)


def optimizers() -> dict[str, Callable[[PoincareEmbedding, float], torch.optim.Optimizer]]:
    """The optimizers compared (geoopt's only when it is installed)."""
    found: dict[str, Callable[[PoincareEmbedding, float], torch.optim.Optimizer]] = {
        "RSGD": lambda m, lr: RiemannianSGD(m.parameters(), lr=lr),
        "RAdam": lambda m, lr: RiemannianAdam(m.parameters(), lr=lr),
        "RAMSGrad": lambda m, lr: RiemannianAMSGrad(m.parameters(), lr=lr),
    }
    if importlib.util.find_spec("geoopt") is not None:
        found["geoopt RAdam"] = _geoopt_adam
    return found


def train(closure: Closure, dim: int, name: str, settings: Settings, seed: int, lr: float | None = None) -> dict:
    """Train one embedding; the loss per epoch, (epoch, mean rank, MAP) checkpoints, points and seconds."""
    lr = LEARNING_RATES[name] if lr is None else lr
    model = PoincareEmbedding(closure.num_nodes, dim, generator=torch.Generator().manual_seed(seed))
    optimizer = optimizers()[name](model, lr)
    sampler = NegativeSampler(closure.edges, closure.num_nodes)
    data_gen = torch.Generator().manual_seed(1000 + seed)  # the same batches and negatives for every optimizer
    losses, evals = [], []
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        scale = 0.1 if epoch <= settings.burnin else 1.0
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        total, count = 0.0, 0
        for edges in batches(closure.edges, settings.batch_size, data_gen):
            negatives, valid = sampler(edges[:, 0], settings.negatives, data_gen)
            optimizer.zero_grad()
            loss = model.loss(edges, negatives, valid)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(edges)
            count += len(edges)
        losses.append(total / count)
        if epoch % settings.eval_every == 0 or epoch == settings.epochs:
            evals.append((epoch, *reconstruction(model.weight.detach(), closure.edges)))
    seconds = time.perf_counter() - start
    points = model.weight.detach()
    return {"loss": losses, "evals": evals, "seconds": seconds, "max_norm": float(points.norm(dim=-1).max()),
            "points": points.tolist() if dim == 2 else None}  # fmt: skip


def run(options: Options) -> StudyResult:
    settings = QUICK if options.quick else FULL
    closure = mammal_closure() if settings.subtree is None else subtree_closure(settings.subtree)
    names = list(optimizers())
    results: dict[int, dict[str, list[dict]]] = {}
    for dim in settings.dims:
        results[dim] = {n: [train(closure, dim, n, settings, seed) for seed in range(options.seeds)] for n in names}
    lines = [
        f"{settings.subtree or 'mammal.n.01'} closure: {closure.num_nodes} nodes, {closure.num_edges} edges; "
        f"{settings.epochs} epochs "
        f"(burn-in {settings.burnin} at lr/10), batch {settings.batch_size}, {settings.negatives} negatives, "
        f"{options.seeds} seed(s); lr {LEARNING_RATES}"
    ]
    summary: dict[int, dict[str, dict]] = {}
    for dim, by_name in results.items():
        summary[dim] = {}
        for name, runs in by_name.items():
            final_loss = mean_and_se([r["loss"][-1] for r in runs])
            rank = mean_and_se([r["evals"][-1][1] for r in runs])
            ap = mean_and_se([r["evals"][-1][2] for r in runs])
            seconds = sum(r["seconds"] for r in runs) / len(runs)
            summary[dim][name] = {"loss": final_loss, "mean_rank": rank, "map": ap, "seconds": seconds}
            lines.append(
                f"dim {dim:>2} {name:<13} loss {final_loss[0]:.4f}  mean rank {rank[0]:8.2f}  MAP {ap[0]:.4f}  "
                f"({seconds:.1f} s/run)"
            )
    fig, axes = figure(4, width=4.4)
    for dim in settings.dims:
        for name, runs in results[dim].items():
            style = {2: ":", 5: "--", 10: "-"}.get(dim, "-")
            color = {"RSGD": "C0", "RAdam": "C1", "RAMSGrad": "C2", "geoopt RAdam": "C3"}[name]
            axes[0].plot(range(1, settings.epochs + 1), runs[0]["loss"], style, color=color, label=f"{name} d={dim}")
            evals = runs[0]["evals"]
            axes[1].plot([e[0] for e in evals], [e[2] for e in evals], style, color=color, marker="o", ms=3)
            axes[2].semilogy([e[0] for e in evals], [e[1] for e in evals], style, color=color, marker="o", ms=3)
    axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss (seed 0)")
    axes[0].legend(fontsize=6, ncol=2)
    axes[1].set(xlabel="epoch", ylabel="MAP", title="reconstruction MAP")
    axes[2].set(xlabel="epoch", ylabel="mean rank", title="reconstruction mean rank")
    _plot_2d(axes[3], closure, results.get(2, {}).get("RAdam", [{}])[0].get("points"))
    data = {"settings": settings.__dict__, "learning_rates": LEARNING_RATES, "summary": summary,
            "runs": {d: {n: [{k: v for k, v in r.items() if k != "points"} for r in rs] for n, rs in by.items()}
                     for d, by in results.items()}}  # fmt: skip
    return StudyResult(data, fig, lines)


def _plot_2d(ax, closure: Closure, points: list | None) -> None:
    """The 2-D embedding: every node, the closure's edges to ``mammal.n.01`` faint, a few labels."""
    import matplotlib.patches as patches

    ax.add_patch(patches.Circle((0, 0), 1, fill=False, color="gray"))
    ax.set(xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), aspect="equal", title="2-D embedding (RAdam, seed 0)")
    ax.axis("off")
    if points is None:
        return
    xy = torch.tensor(points)
    ax.scatter(xy[:, 0], xy[:, 1], s=2, c="C1")
    depth = torch.bincount(closure.edges[:, 0], minlength=closure.num_nodes)
    shown = {"mammal.n.01", "placental.n.01", "carnivore.n.01", "primate.n.02", "ungulate.n.01", "rodent.n.01",
             "dog.n.01", "cat.n.01", "whale.n.02", "horse.n.01", "marsupial.n.01", "bat.n.01"}  # fmt: skip
    for i, name in enumerate(closure.names):
        if name in shown or (depth[i] <= 2 and i % 3 == 0):
            ax.annotate(name.split(".")[0], (float(xy[i, 0]), float(xy[i, 1])), fontsize=5)


STUDY = Study(
    "poincare",
    "Poincaré embeddings of the WordNet mammal closure: RSGD vs Riemannian Adam/AMSGrad (and geoopt)",
    run,
)
