"""``ManifoldParameter``: an ``nn.Parameter`` that knows the manifold its points live on.

The Riemannian optimizers read ``param.manifold``; plain parameters are Euclidean. A ManifoldParameter
stays one through ``copy.deepcopy`` (of the parameter or of its module) and ``pickle`` / ``torch.save`` of
a module, keeping its manifold; ``module.state_dict()`` holds its values as a plain tensor (as for every
Parameter) and ``module.load_state_dict`` copies values into it, so the parameter keeps its manifold.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from memopt.manifolds.base import Manifold
from memopt.manifolds.euclidean import Euclidean


def _rebuild(data: torch.Tensor, manifold: Manifold, requires_grad: bool) -> ManifoldParameter:
    return ManifoldParameter(data, manifold, requires_grad=requires_grad)


class ManifoldParameter(nn.Parameter):
    """A parameter whose last ``manifold.ndim`` dimensions are points of ``manifold``.

    Args:
        data: the values (a tensor; its shape is checked against the manifold).
        manifold: the manifold (default :class:`~memopt.manifolds.Euclidean`).
        requires_grad: as for ``nn.Parameter``.
        project: replace ``data`` by ``manifold.projx(data)`` (e.g. to start from arbitrary values).

    A wrong shape (a 3 x 5 Stiefel frame, a 1-coordinate sphere) is a ``ValueError`` here; whether the
    values are on the manifold is checked by the Riemannian optimizers at the parameter's first step.
    """

    manifold: Manifold

    def __new__(
        cls,
        data: torch.Tensor | None = None,
        manifold: Manifold | None = None,
        requires_grad: bool = True,
        *,
        project: bool = False,
    ) -> ManifoldParameter:
        if data is None:
            data = torch.empty(0)
        manifold = Euclidean() if manifold is None else manifold
        if not isinstance(manifold, Manifold):
            raise TypeError(f"ManifoldParameter needs a memopt.manifolds.Manifold, got {type(manifold).__name__}.")
        problem = manifold.check_shape(data.shape)
        if problem is not None:
            raise ValueError(f"ManifoldParameter on {manifold!r}: {problem}.")
        if project:
            with torch.no_grad():
                data = manifold.projx(data)
        instance = torch.Tensor._make_subclass(cls, data.detach(), requires_grad)
        instance.manifold = manifold
        return instance

    def __deepcopy__(self, memo: dict) -> ManifoldParameter:
        if id(self) in memo:
            return memo[id(self)]
        result = type(self)(
            self.data.clone(memory_format=torch.preserve_format), copy.deepcopy(self.manifold, memo), self.requires_grad
        )
        memo[id(self)] = result
        return result

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return _rebuild, (self.data, self.manifold, self.requires_grad)

    def __repr__(self) -> str:
        return f"ManifoldParameter on {self.manifold!r} containing:\n{self.data!r}"
