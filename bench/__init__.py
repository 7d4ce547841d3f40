"""Benchmarks and reproductions of the project's claims; each module is a script with a ``main``.

Run them from the checkout: ``python bench/reproduce_mad.py --quick`` or ``python -m bench.reproduce_mad
--quick``. Other code (tests, other scripts) imports them as a package, ``from bench import
reproduce_mad`` or ``from bench.run_records import RunRecords``, with no ``sys.path`` edits: a script puts
the checkout's root on ``sys.path`` itself when it runs as a file.
"""
