"""``python -m edgeopt_runtime``: the on-device CLI (see ``edgeopt_runtime.cli``)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
