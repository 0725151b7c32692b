"""``python -m orchestrator CONFIG ...`` is the same as ``python -m orchestrator.run``."""

import sys

from orchestrator.run import main

sys.exit(main())
