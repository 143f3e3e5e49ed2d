"""``python -m tests.mutants``: see the package docstring."""

from tests.mutants.harness import main

raise SystemExit(main())
