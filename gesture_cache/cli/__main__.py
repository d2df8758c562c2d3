"""`python -m gesture_cache.cli`: the `gesture-cache` command (as before the layout)."""

import sys

from gesture_cache.cli.main import main

sys.exit(main())
