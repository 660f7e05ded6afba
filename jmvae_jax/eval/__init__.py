"""Evaluation: importance-sampled log-likelihoods, cross-modal metrics and the report.

* ``plan``: which estimators a model can compute, grouped into shared passes.
* ``estimators``: the jitted per-batch estimates and ``estimate`` over a test set.
* ``loop``: the one masked loop over test batches that every quantity runs through.
* ``metrics``: cross-modal accuracy, the round trip and coherence.
* ``classifier``: the small classifier that coherence is judged by.
* ``report``: the paper's Table 1 layout.
* ``job``: ``evaluate_workdir``, what ``launch.py --mode=evaluate`` runs.
"""
from jmvae_jax.eval.estimators import (batch_fn, estimate, make_tables, options, per_example,
                                       suggest_chunk_size)
from jmvae_jax.eval.metrics import (agreement, coherence, cross_modal_accuracy,
                                    cross_modal_targets, round_trip_accuracy)
from jmvae_jax.eval.plan import default_estimators, estimator_names, make_plan
from jmvae_jax.eval.report import markdown_table

__all__ = ["agreement", "batch_fn", "coherence", "cross_modal_accuracy", "cross_modal_targets",
           "default_estimators", "estimate", "estimator_names", "make_plan", "make_tables",
           "markdown_table", "options", "per_example", "round_trip_accuracy",
           "suggest_chunk_size"]
