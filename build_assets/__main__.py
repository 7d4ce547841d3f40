"""``python -m build_assets build ...``: build or update the demo assets (see :mod:`build_assets.builder`)."""

import sys

from build_assets.builder import main

sys.exit(main())
