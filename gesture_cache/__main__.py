"""`python -m gesture_cache`: the `gesture-cache` command."""

import sys

from gesture_cache.cli.main import main

sys.exit(main())
