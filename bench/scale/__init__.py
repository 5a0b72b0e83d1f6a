"""The scale bench: the real DAG, end to end on the local backend, at Fruits-360 sizes.

    python -m bench.scale                                   # make bench-scale: 10k, 30k, 90k
    python -m bench.scale --sizes 300,600 --backfill-days 2 --backfill-images 200 --image-size 96
    python -m bench.scale --no-runs                         # only write the batches

``make bench`` times the Spark jobs alone; this bench asks what a user of the DAG sees:
does each stage of a run (upload, staging, featurize, reduce, publish, teardown) grow
linearly with the batch, does any process's memory grow with it, does every image come
out exactly once, and what does a small daily batch (a backfill) pay besides the CNN.

- :mod:`.batch` writes the synthetic batches (131 labels, ~4 KB JPEGs, a few bad files);
- :mod:`.pipeline` runs them as ``scripts/demo.sh`` does (moto's S3 on loopback,
  ``airflow dags test`` with ``scripts/lib.sh``'s environment);
- :mod:`.metadata` reads the task and DAG run durations from Airflow's SQLite database,
  :mod:`.step_walls` the steps' spark-submit wall times from the local cluster's files;
- :mod:`.process_memory` samples the peak RSS of the run's processes, by group;
- :mod:`.completeness` reads the published outputs back and checks them;
- :mod:`.verdicts` says what grows linearly and what memory stays flat;
- :mod:`.report` prints the Markdown tables; :mod:`.run` runs it all in order.

A small unmeasured run goes first (``--no-warmup`` skips it): the first featurize of a
model and image size converts the model, once, and that belongs to no batch size.

Run by hand, never by ``make test``: the default sizes take hours on 2 cores.
"""
