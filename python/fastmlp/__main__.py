"""``python -m fastmlp``: the same command line as the ``fastmlp`` script."""

from .cli import main

raise SystemExit(main())
