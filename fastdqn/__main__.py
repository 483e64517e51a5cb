"""``python -m fastdqn``: the same command as ``fastdqn``."""

import sys

from fastdqn.tools.cli import main

sys.exit(main())
