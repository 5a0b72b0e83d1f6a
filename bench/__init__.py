"""Side-by-side performance measurements: ``python -m bench.run`` (``make bench``)."""
