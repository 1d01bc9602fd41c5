"""The nightly's model as an MLflow ``pyfunc`` model, written as MLflow "models from code".

:mod:`lepton_spark.tracking` logs this file (not a pickled object: the project loads weights with
``allow_pickle=False`` and keeps that promise in MLflow too) together with the run's model artifact
(``model.npz`` + ``model.json``) under the artifact name ``lepton_model``. Loading the MLflow model
runs this file, which needs ``lepton_spark`` importable (the model's requirements name it).

Prediction runs on the driver with numpy/scipy -- the reference forward pass the trainer uses --
for what fits in one process (scoring a sample, a new subgraph, serving). The Spark forward pass of
the nightly stays the batch path for whole graphs.

Input: a dict ``{"vertices": DataFrame, "edges": DataFrame}`` (pandas) with the columns of the
project's graph tables: vertices ``id`` (integer) and ``features`` (a list of floats per row, as
many as the model's input features), edges ``src``, ``dst`` and optionally ``weight``. Edges whose
endpoints are not among the vertices are ignored, as in the Spark engine. Output: a DataFrame with
``id``, ``label`` (argmax) and ``probs`` (class probabilities), in ascending id order, like the
nightly's ``predictions`` table.
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc

from lepton_spark.tracking import MODEL_ARTIFACT


def predict_frame(model: Any, model_input: Any) -> Any:
    """Class probabilities of every vertex of a pandas graph with a loaded :class:`GraphModel`.

    Parameters
    ----------
    model : lepton_spark.models.base.GraphModel
        A fitted model (``lepton_spark.models.artifact.load_model``).
    model_input : dict
        ``{"vertices": DataFrame(id, features), "edges": DataFrame(src, dst[, weight])}``.

    Returns
    -------
    pandas.DataFrame
        ``id``, ``label``, ``probs`` per vertex, ascending id.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from lepton_spark.errors import InvalidInputError
    from lepton_spark.pipeline.stages import _graph_arrays

    if not isinstance(model_input, dict) or not {"vertices", "edges"} <= set(model_input):
        raise InvalidInputError("lepton pyfunc model: input must be a dict with 'vertices' and 'edges' "
                                "pandas DataFrames")
    vertices, edges = model_input["vertices"], model_input["edges"]
    missing = [f"vertices.{c}" for c in ("id", "features") if c not in vertices.columns]
    missing += [f"edges.{c}" for c in ("src", "dst") if c not in edges.columns]
    if missing:
        raise InvalidInputError(f"lepton pyfunc model: missing column(s) {', '.join(missing)}")
    vt = pa.table({
        "id": pa.array(vertices["id"].to_numpy(), pa.int64()),
        "features": pa.array([np.asarray(f, dtype=np.float32) for f in vertices["features"]],
                             pa.list_(pa.float32())),
    })
    ecols = {"src": pa.array(edges["src"].to_numpy(), pa.int64()), "dst": pa.array(edges["dst"].to_numpy(), pa.int64())}
    if "weight" in edges.columns:
        ecols["weight"] = pa.array(edges["weight"].to_numpy(), pa.float64())
    data = _graph_arrays(vt, pa.table(ecols))
    probs = model.predict_proba_local(data["A"], data["X"])
    return pd.DataFrame({"id": data["ids"], "label": np.argmax(probs, axis=1).astype(np.int32),
                         "probs": list(probs.astype(np.float32))})


class LeptonGraphModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: loads ``model.npz`` (sha256 and shapes verified) and predicts on the driver."""

    def load_context(self, context: Any) -> None:
        from lepton_spark.models.artifact import load_model

        self.model = load_model(context.artifacts[MODEL_ARTIFACT])

    # no annotations on predict's inputs: MLflow reads them as the model's input schema, and a dict of
    # frames is not one of its types (it would warn on every save and load)
    def predict(self, context, model_input, params=None):
        """``{"vertices": DataFrame, "edges": DataFrame}`` -> ``DataFrame(id, label, probs)``."""
        return predict_frame(self.model, model_input)


mlflow.models.set_model(LeptonGraphModel())
