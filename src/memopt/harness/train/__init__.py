"""Training harness: LLaMA-style model presets, data and tokenizer, the training loop and checkpoints.

The entry points are :func:`memopt.harness.train.loop.train` with a :class:`memopt.harness.train.config.TrainConfig`
(``memopt train`` on the command line) and :mod:`memopt.harness.bench.compare` (``memopt compare``).

* :mod:`.config` and :mod:`.options`: the run configuration, every setting declared once with its flag;
  :mod:`.choices`: the fixed choices of the flags and the "did you mean" check.
* :mod:`.loop`: the :class:`~memopt.harness.train.loop.Trainer`; :mod:`.step`: the microbatched step it
  shares with the memory planner and study; :mod:`.progress`: progress events and the run's display.
* :mod:`.distributed`: the run's processes (one, or torchrun's with DDP / FSDP2).
* :mod:`.run_checkpoint`: the run's checkpoint in either format (:mod:`.checkpoint`, :mod:`.sharded_checkpoint`).

Nothing is imported with the package (the memory planner imports its pieces without the loop); import the
modules where needed.
"""
