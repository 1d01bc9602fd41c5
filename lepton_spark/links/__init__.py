"""Link prediction: edge splits and ranking metrics (driver), candidate pairs, edge scores and top-k
new links (Spark).

* :mod:`lepton_spark.links.split` -- the seeded 85/5/10 edge split with sampled negatives;
* :mod:`lepton_spark.links.metrics` -- ROC AUC and average precision (sklearn's definitions);
* :mod:`lepton_spark.links.spark` -- ``edge_scores``, ``candidate_pairs``, ``link_predictions``.

The model is :class:`lepton_spark.models.gae.GAE` (``model.type: gae``); the nightly stage is
``links`` (:mod:`lepton_spark.pipeline.links`).
"""

from __future__ import annotations
