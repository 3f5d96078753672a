"""`python -m nulog` runs the `nulog` command."""

from __future__ import annotations

import sys

from nulog.cli import main

sys.exit(main())
