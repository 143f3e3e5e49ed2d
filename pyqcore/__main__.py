"""``python -m pyqcore``: the same as the ``pyqcore`` command."""

import sys

from pyqcore.cli import main

sys.exit(main())
