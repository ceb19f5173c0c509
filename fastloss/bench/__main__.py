"""python -m fastloss.bench: the benchmark report's command line."""

import sys

from .cli import main

sys.exit(main())
