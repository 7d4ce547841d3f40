"""``python -m mad_models ...`` runs the ``mad-models`` command line."""

import sys

from mad_models.cli import main

sys.exit(main())
