"""`python -m dacbench_remote` is the `dacbench-remote` command."""

import sys

from .cli import main

sys.exit(main())
