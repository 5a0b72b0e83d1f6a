"""precision=int8 against fp32: the method study (``python -m bench.precision.study``) and
its evaluation crops; the job's own int8 figures are ``make bench-precision``'s."""
