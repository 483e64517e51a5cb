"""``python -m fastdqn``: the same command as ``fastdqn``."""

import sys

from fastdqn.cli import main

sys.exit(main())
