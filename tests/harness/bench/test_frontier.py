"""The Pareto front of state bytes against final validation loss, and its plot."""

from __future__ import annotations

from memopt.harness.bench.frontier import pareto_front, plot_frontier


def test_the_front_keeps_exactly_the_undominated_points():
    points = {
        "adamw": (100.0, 3.0),  # the best loss
        "galore": (60.0, 3.2),
        "muon": (80.0, 3.3),  # dominated by galore: more state, higher loss
        "apollo_mini": (10.0, 3.4),  # the least state
        "equal_state_worse": (10.0, 3.5),  # apollo_mini's state, a higher loss
    }
    assert pareto_front(points) == ["apollo_mini", "galore", "adamw"]
    assert pareto_front({"a": (1.0, 1.0), "b": (1.0, 1.0)}) == ["a", "b"]  # ties dominate neither


def test_the_plot_is_written_with_the_front(tmp_path):
    rows = [
        {"optimizer": "adamw", "state_bytes": 8 * 2**20, "final_val_loss": 3.0},
        {"optimizer": "muon", "state_bytes": 6 * 2**20, "final_val_loss": 3.1},
        {"optimizer": "lion", "state_bytes": 6 * 2**20, "final_val_loss": 3.3},
        {"optimizer": "diverged", "state_bytes": 2**20, "final_val_loss": None},  # no point
    ]
    path = tmp_path / "frontier.png"
    assert plot_frontier({"rows": rows, "preset": "tiny"}, path) == ["muon", "adamw"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
