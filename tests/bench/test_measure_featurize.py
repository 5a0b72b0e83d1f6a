"""Which featurize jobs one bench runs for a model."""

from __future__ import annotations

from bench.measure_featurize import variants_for


def test_a_runtime_variant_that_repeats_shipped_is_not_run_twice():
    every = ["shipped", "keras-runtime", "litert-runtime", "tiered-jit"]
    assert variants_for("vgg16", every) == ["shipped", "litert-runtime", "tiered-jit"]
    assert variants_for("mobilenetv2", every) == ["shipped", "keras-runtime", "tiered-jit"]
    # without shipped in the run, the runtime variant is the only job of that runtime
    assert variants_for("vgg16", ["keras-runtime"]) == ["keras-runtime"]


def test_the_int8_job_runs_only_where_it_was_measured():
    """int8 (docs/precision.md): mobilenet with its real weights; random weights' features
    (~1e-11) round to zero, and other models' int8 was never measured."""
    every = ["shipped", "int8"]
    assert variants_for("mobilenet", every, "imagenet") == ["shipped", "int8"]
    assert variants_for("mobilenet", every, "random") == ["shipped"]
    assert variants_for("mobilenetv2", every, "imagenet") == ["shipped"]
