"""Memory: exact optimizer-state bytes, and the planner of training memory.

* :mod:`.accounting`: ``memopt.state_bytes`` and reports comparing optimizers' state.
* :mod:`.tracker`: the live-tensor tracker every planner figure rests on.
* :mod:`.breakdown`: the components, the peak, the table and JSON.
* :mod:`.techniques`: microbatches, checkpointing, precision, sparsity, as data.
* :mod:`.sparsity` and :mod:`memopt.wrappers.master_weights`: the two techniques that change the model's tensors.
* :mod:`.workloads`: what to plan for (harness presets, ``transformers`` configs, module factories).
* :mod:`.profile`: ``estimate`` (fake tensors) and ``measure`` (a real run).
* :mod:`.plan`: the ``memopt memory`` command.
* :mod:`.fit` and :mod:`.fit_command`: ``memopt fit``, the configurations that fit a memory budget, ranked by
  the measured loss penalties of :mod:`.penalties` and the speed model of :mod:`.speed`.

Only :mod:`.accounting` is imported with ``memopt``; import the others where needed.
"""
