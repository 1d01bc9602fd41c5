"""Graph neural network models trained with numpy/scipy on the driver and run on Spark.

Models (all share :class:`~lepton_spark.models.base.GraphModel`):

* ``gcn``   – :class:`GCN` (Kipf & Welling 2017)
* ``sage``  – :class:`GraphSAGE` with the mean aggregator (Hamilton et al. 2017)
* ``sgc``   – :class:`SGC` (Wu et al. 2019)
* ``sign``  – :class:`SIGN` (Frasca et al. 2020)
* ``appnp`` – :class:`APPNP` (Klicpera et al. 2019)
* ``gae``   – :class:`GAE` graph auto-encoder for link prediction (Kipf & Welling 2016; VGAE too)

Entry points: :func:`create_model`, :func:`lepton_spark.models.trainer.train`,
:mod:`lepton_spark.models.artifact` (``save_model`` / ``load_model``) and
:func:`lepton_spark.models.precompute.train_from_spark` (large graphs).
"""

from __future__ import annotations

from lepton_spark.models.appnp import APPNP
from lepton_spark.models.base import GraphModel
from lepton_spark.models.gae import GAE
from lepton_spark.models.gcn import GCN
from lepton_spark.models.registry import MODEL_TYPES, create_model
from lepton_spark.models.sage import GraphSAGE
from lepton_spark.models.sgc import SGC
from lepton_spark.models.sign import SIGN

__all__ = ["APPNP", "GAE", "GCN", "MODEL_TYPES", "SGC", "SIGN", "GraphModel", "GraphSAGE", "create_model"]
