"""Paper-literal reference implementations used by memopt's test suite.

Nothing in this package imports ``memopt``: it is an independent reading of
``ALGORITHMS-memory.md`` (sections 1-3) and of the library conventions listed in
``naive.py``.
"""
