"""``python -m memopt.experiments NAME``: run one study (see :mod:`memopt.experiments`)."""

from memopt.experiments import main

raise SystemExit(main())
