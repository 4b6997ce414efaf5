"""``python -m memopt.harness.experiments NAME``: run one study (see :mod:`memopt.harness.experiments`)."""

from memopt.harness.experiments import main

raise SystemExit(main())
