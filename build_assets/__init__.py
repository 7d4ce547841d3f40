"""The demo-asset builder: ``python -m build_assets build`` writes ``assets/`` (see ``builder.py``).

A tool of this repository, not part of the ``mad-models`` wheel: it trains the app's demo models with the
library's public API, reading ``data/`` and writing ``assets/`` of a checkout.
"""
