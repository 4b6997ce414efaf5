"""What ``memopt compare`` does without flags: its optimizers, its training recipe, its learning rates.

* :data:`DEFAULT_OPTIMIZERS`: AdamW, AdamW with per-group learning rates (``adamw_groups``, see
  :data:`VARIANTS`), AdamW-SN and AdamW-SNSM.
* :data:`COMPARE_RECIPES`: the settings of a comparison per model preset, over the preset's own recipe
  (``memopt.harness.train.config.RECIPES``): shorter for ``small``, so that the default comparison, four
  optimizers x three seeds, trains in a few minutes on two CPU cores while staying within one pass over
  the default corpus.
* :data:`TUNED`: per preset, learning rates chosen by a ``memopt compare --tune`` sweep on that recipe
  (the command is recorded with them and in docs/results.md). They replace the registry's defaults, which
  are meant for 60M-1B models; without an entry the registry's values are used.
"""

from __future__ import annotations

from typing import Any

DEFAULT_OPTIMIZERS = ("adamw", "adamw_groups", "adamw_sn", "adamw_snsm")
DEFAULT_SEEDS = 3

#: row labels that are not registry names: label -> (registry name, hyperparameters over its defaults).
#: ``adamw_groups`` is AdamW with the parameter groups of the Subset-Norm presets: nn.Linear weights at
#: ``lr``, everything else (embeddings, norms) at ``plain_lr``, by default the Subset-Norm presets' rate;
#: it separates what a compressed method does from what a larger rate on the embeddings does.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "adamw_groups": ("adamw", {"plain_lr": 2e-2}),
}

#: ``memopt compare``'s settings per preset, over the preset's recipe; explicit flags override them
COMPARE_RECIPES: dict[str, dict[str, Any]] = {
    "small": {"batch_size": 8, "max_steps": 160, "eval_every": 20, "eval_batches": 8},
}

#: per preset: learning rates from sweeps on :data:`COMPARE_RECIPES`' settings, and the sweeps' commands
#: (163,840 tokens per run, seed 0). First ``lr`` (5 values, x0.1 to x10 of the registry's, half a decade
#: apart), then the embeddings-and-norms rate ``plain_lr`` of the three grouped rows on a wider grid, at the
#: ``lr`` chosen first; every choice lies inside its grid. docs/results.md has the losses and the 3-seed
#: comparison at these values.
TUNED: dict[str, dict[str, Any]] = {
    "small": {
        "command": "memopt compare --preset small --optimizers adamw,adamw_groups,adamw_sn,adamw_snsm,adamw8bit,"
        "adafactor --tune lr,adamw_groups:plain_lr --seeds 3 --registry-lrs --threads 1 && "
        "memopt compare --optimizers adamw_groups,adamw_sn,adamw_snsm --baseline adamw_groups --tune plain_lr "
        "--grid 'plain_lr=0.02;0.05;0.1;0.2;0.4;0.8' --seeds 1",
        "hparams": {
            "adamw": {"lr": 2e-3},
            "adamw_groups": {"lr": 2e-3, "plain_lr": 0.4},
            "adamw_sn": {"lr": 2e-2, "plain_lr": 0.4},
            "adamw_snsm": {"lr": 2e-2, "plain_lr": 0.1},
        },
    },
}


def compare_recipe(preset: str) -> dict[str, Any]:
    """``memopt compare``'s settings for ``preset`` (empty: the preset's own recipe)."""
    return dict(COMPARE_RECIPES.get(preset, {}))


def tuned_hparams(preset: str | None, label: str) -> dict[str, Any]:
    """The swept hyperparameters recorded for ``label`` on ``preset`` (empty if none)."""
    return dict(TUNED.get(preset or "", {}).get("hparams", {}).get(label, {}))


def tuned_command(preset: str | None) -> str | None:
    """The command of the sweep behind :func:`tuned_hparams` for ``preset``."""
    return TUNED.get(preset or "", {}).get("command")
