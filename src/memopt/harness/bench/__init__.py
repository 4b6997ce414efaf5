"""Benchmarks: ``memopt compare`` (convergence, state memory and speed of optimizers side by side), plots."""
