"""Nightly pipeline on the bundled Cora sample: outputs, atomic publish, resume, idempotence, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lepton_spark.cli import main
from lepton_spark.config import load_config
from lepton_spark.pipeline import run_pipeline
from lepton_spark.pipeline.faults import InjectedFault
from lepton_spark.pipeline.fingerprint import table_fingerprint

from .conftest import SAMPLE_GRAPH

DATE = "2026-11-01"


def _cfg(*overrides: str):
    return load_config(None, [f"pipeline.graph_dir={SAMPLE_GRAPH}", "model.type=sgc", "model.params={K: 2}",
                              "model.preset=cora", *overrides])


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """One full nightly run (train + propagate + report) shared by the tests below."""
    out = tmp_path_factory.mktemp("nightly")
    cfg = _cfg()
    manifest = run_pipeline(spark, cfg, output=str(out), run_date=DATE, stages=["build", "train", "propagate",
                                                                                  "report"])
    return out, manifest


def _rows(out: Path, table: str, date: str = DATE) -> list[dict]:
    return pq.read_table(out / "outputs" / table / f"run_date={date}").to_pylist()


def test_end_to_end_outputs(spark, trained) -> None:
    out, manifest = trained
    emb = spark.read.parquet(str(out / "outputs" / "embeddings"))
    pred = spark.read.parquet(str(out / "outputs" / "predictions"))
    assert [(f.name, f.dataType.simpleString()) for f in emb.schema.fields] == [
        ("id", "bigint"), ("embedding", "array<float>"), ("run_date", "date")]
    assert [(f.name, f.dataType.simpleString()) for f in pred.schema.fields] == [
        ("id", "bigint"), ("label", "int"), ("probs", "array<float>"), ("run_date", "date")]
    assert emb.count() == pred.count() == 2708
    assert manifest["tables"]["predictions"]["rows"] == 2708
    # manifest contents
    saved = json.loads((out / "runs" / DATE / "_manifest.json").read_text())
    cfg = _cfg()
    assert saved["run_id"] == f"{DATE}-{cfg.digest()[:10]}" and saved["run_date"] == DATE
    assert saved["config_sha256"] == cfg.digest() and saved["config"] == json.loads(json.dumps(cfg.to_dict()))
    assert saved["stages"] == ["build", "train", "propagate", "report"] and saved["engine"] == "builtin"
    assert set(saved["stage_seconds"]) == {"build", "train", "propagate", "publish"}
    assert all(v >= 0 for v in saved["stage_seconds"].values())
    assert len(saved["round_seconds"]["propagate"]) == 2  # SGC K=2: two propagation rounds
    assert saved["counts"]["input_vertices"] == 2708 and saved["counts"]["input_edges"] == 10556
    assert saved["spark_version"] == spark.version
    # the model entry is the artifact on disk: its sha256 is the weights file's, its digest the card's
    from lepton_spark.models.artifact import card_digest, sha256_file

    model_dir = out / "runs" / DATE / "model"
    card = json.loads((model_dir / "model.json").read_text())
    assert saved["model"]["sha256"] == sha256_file(model_dir / "model.npz")
    assert saved["model"]["card_sha256"] == card_digest(card) and saved["model"]["dir"] == str(model_dir)
    assert saved["model"]["trained_by_this_run"] is True and saved["model"]["type"] == "sgc"
    # every table: true rows, the run that wrote it, a fingerprint of exactly the published files
    assert set(saved["tables"]) == {"embeddings", "predictions"}
    for table, info in saved["tables"].items():
        part = out / "outputs" / table / f"run_date={DATE}"
        assert info["path"] == str(part) and info["run_id"] == saved["run_id"]
        token = (part / "_LEPTON_RUN").read_text().split()
        assert token[0] == saved["run_id"] and len(token[1]) == 32
        assert info["rows"] == 2708 and info == {"path": str(part), "run_id": saved["run_id"],
                                                  "write_token": token[1], **table_fingerprint(str(part))}
        assert info["bytes"] == sum(f.stat().st_size for f in part.glob("*.parquet"))
    # predictions equal the driver forward pass of the same artifact
    from lepton_spark.models.artifact import load_model
    from lepton_spark.pipeline.stages import local_graph

    assert card["metrics"]["final"]["test_acc"] > 0.75
    model = load_model(out / "runs" / DATE / "model")
    vertices = spark.read.parquet(str(SAMPLE_GRAPH / "vertices"))
    edges = spark.read.parquet(str(SAMPLE_GRAPH / "edges"))
    data = local_graph(spark, vertices, edges)
    direct = local_graph(spark, vertices, edges, str(SAMPLE_GRAPH))  # pyarrow reads the files itself
    assert np.array_equal(direct["ids"], data["ids"]) and (direct["A"] != data["A"]).nnz == 0
    assert np.array_equal(direct["y"], data["y"]) and (abs(direct["X"] - data["X"]) > 0).nnz == 0
    assert all(np.array_equal(direct["masks"][k], data["masks"][k]) for k in data["masks"])
    want = model.predict_proba_local(data["A"], data["X"])
    got = {r["id"]: r for r in _rows(out, "predictions")}
    probs = np.array([got[i]["probs"] for i in data["ids"]])
    np.testing.assert_allclose(probs, want, atol=1e-5)
    assert np.array_equal(np.array([got[i]["label"] for i in data["ids"]]), want.argmax(axis=1))
    acc = np.mean(want.argmax(axis=1)[data["masks"]["test"]] == data["y"][data["masks"]["test"]])
    assert abs(acc - card["metrics"]["final"]["test_acc"]) < 1e-6
    # the per-class counts the report plots: those of the published predictions, counted here
    per_class = np.unique(np.array([r["label"] for r in got.values()]), return_counts=True)
    assert saved["counts"]["predictions_by_label"] == [[int(v), int(c)] for v, c in zip(*per_class, strict=True)]
    # the report
    report = out / "runs" / DATE / "report"
    page = (report / "index.html").read_text()
    for png in ("training_curve.png", "degree_distribution.png", "timings.png", "prediction_classes.png"):
        assert (report / png).stat().st_size > 1000 and png in page
    # no leftovers
    assert not (out / "_staging").exists() and not (out / "_work").exists()


def _reuse(out: Path, *more: str):
    return _cfg("train.enabled=false", f"pipeline.model_dir={out / 'runs' / DATE / 'model'}", *more)


def test_interrupted_publish_keeps_previous_run(spark, trained, tmp_path) -> None:
    out, _ = trained
    before = sorted((r["id"], r["probs"]) for r in _rows(out, "predictions"))
    manifest_before = (out / "runs" / DATE / "_manifest.json").read_text()
    for point in ("stage:propagate", "round:1", "publish:embeddings"):
        plan = "partitioned" if point.startswith("round") else "broadcast"  # round hook of the distributed plan
        cfg = _reuse(out, f"graph.plan={plan}")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LEPTON_FAIL_AFTER", point)
            with pytest.raises(InjectedFault, match=point):
                run_pipeline(spark, cfg, output=str(out), run_date=DATE, stages=["propagate"], run_id=f"crash-{point}")
        # previous predictions intact and readable; the run without a manifest did not happen
        assert sorted((r["id"], r["probs"]) for r in _rows(out, "predictions")) == before
        assert (out / "runs" / DATE / "_manifest.json").read_text() == manifest_before
        for table in ("embeddings", "predictions"):
            parts = list((out / "outputs" / table).iterdir())
            assert [p.name for p in parts] == [f"run_date={DATE}"], parts
            assert len(_rows(out, table)) == 2708


def test_resume_after_round_failure_equals_uninterrupted(spark, trained, tmp_path) -> None:
    out, _ = trained
    fresh = tmp_path / "fresh"
    cfg = _reuse(out, "graph.plan=partitioned")
    run_pipeline(spark, cfg, output=str(fresh), run_date=DATE, stages=["propagate"])
    want = sorted((r["id"], r["probs"]) for r in _rows(fresh, "predictions"))
    resumed = tmp_path / "resumed"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_FAIL_AFTER", "round:2")
        with pytest.raises(InjectedFault, match="round:2"):
            run_pipeline(spark, cfg, output=str(resumed), run_date=DATE, stages=["propagate"], run_id="r1")
    rounds_file = list((resumed / "_work" / "r1" / "propagate").rglob("_COMPLETE"))
    assert rounds_file, "completed rounds were recorded"
    manifest = run_pipeline(spark, cfg, output=str(resumed), run_date=DATE, stages=["propagate"], run_id="r1")
    assert len(manifest["round_seconds"]["propagate"]) < len(
        json.loads((fresh / "runs" / DATE / "_manifest.json").read_text())["round_seconds"]["propagate"])
    got = sorted((r["id"], r["probs"]) for r in _rows(resumed, "predictions"))
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose(np.array([g[1] for g in got]), np.array([w[1] for w in want]), atol=1e-6)


def test_partitioned_tables_written_by_the_tasks_equal_spark_written(spark, trained, tmp_path, caplog) -> None:
    """The partitioned plan's embeddings and predictions, written by the tasks that compute them
    (local master, local output: lepton_spark.task_writes), equal those Spark writes on a cluster
    (forced here by saying the tasks do not share the disk): rows, schemas as Spark reads them, counts."""
    import logging

    from lepton_spark import task_writes

    out, _ = trained
    cfg = _reuse(out, "graph.plan=partitioned")
    with caplog.at_level(logging.INFO, logger="lepton_spark.pipeline.context"):
        by_tasks = run_pipeline(spark, cfg, output=str(tmp_path / "tasks"), run_date=DATE, stages=["propagate"])
    assert "embeddings, predictions: written by the tasks that computed the rows" in caplog.text
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_writes, "tasks_share_disk", lambda *a: False)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lepton_spark.pipeline.context"):
            by_spark = run_pipeline(spark, cfg, output=str(tmp_path / "spark"), run_date=DATE, stages=["propagate"])
        assert "written by the tasks" not in caplog.text
    for table in ("embeddings", "predictions"):
        a = spark.read.parquet(str(tmp_path / "tasks" / "outputs" / table))
        b = spark.read.parquet(str(tmp_path / "spark" / "outputs" / table))
        assert a.schema == b.schema
        assert a.count() == 2708 and a.select("id").distinct().count() == 2708
        assertDataFrameEqual(a, b, rtol=0, atol=0)  # the same numpy in the same pass: identical values
        assert by_tasks["tables"][table]["rows"] == by_spark["tables"][table]["rows"] == 2708
    saved = [json.loads((tmp_path / d / "runs" / DATE / "_manifest.json").read_text()) for d in ("tasks", "spark")]
    assert saved[0]["counts"]["predictions_by_label"] == saved[1]["counts"]["predictions_by_label"]
    assert sum(c for _v, c in saved[0]["counts"]["predictions_by_label"]) == 2708
    # one data file per task, each published with its run marker; no temporary file left
    files = sorted(p.name for p in (tmp_path / "tasks" / "outputs" / "embeddings" / f"run_date={DATE}").iterdir())
    assert "_LEPTON_RUN" in files and all(f.startswith("part-") or f == "_LEPTON_RUN" for f in files), files


def test_partitioned_analytics_written_by_the_tasks_equal_spark_written(spark, trained, tmp_path, caplog) -> None:
    """The partitioned block engine's PageRank, components and communities (rows unpacked from its
    packed states, the ranks rescaled in the unpacking) written by the tasks that unpack them equal
    what Spark writes when the tasks do not share the disk, and the ranks sum to the vertex count."""
    import logging

    from lepton_spark import task_writes

    out, _ = trained
    cfg = _reuse(out, "graph.plan=partitioned", "analytics.local_max_edges=0")
    stages = ["propagate", "analytics"]
    with caplog.at_level(logging.INFO, logger="lepton_spark.pipeline.context"):
        run_pipeline(spark, cfg, output=str(tmp_path / "tasks"), run_date=DATE, stages=stages)
    for table in ("pagerank", "components", "communities"):
        assert f"{table}: written by the tasks that computed the rows" in caplog.text
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_writes, "tasks_share_disk", lambda *a: False)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lepton_spark.pipeline.context"):
            run_pipeline(spark, cfg, output=str(tmp_path / "spark"), run_date=DATE, stages=stages)
        assert "written by the tasks" not in caplog.text
    for table in ("pagerank", "components", "communities"):
        a = spark.read.parquet(str(tmp_path / "tasks" / "outputs" / table))
        b = spark.read.parquet(str(tmp_path / "spark" / "outputs" / table))
        assert a.schema == b.schema
        assert a.count() == 2708 and a.select("id").distinct().count() == 2708
        # the ranks' sum is taken in another order by each path: equal to rounding
        assertDataFrameEqual(a, b, rtol=1e-12 if table == "pagerank" else 0, atol=0)
    total = spark.read.parquet(str(tmp_path / "tasks" / "outputs" / "pagerank")).agg(F.sum("pagerank")).first()[0]
    assert total == pytest.approx(2708, rel=1e-9)


def test_rerun_is_idempotent_and_other_dates_untouched(spark, trained, tmp_path) -> None:
    out, _ = trained
    other = "2026-10-31"
    cfg = _reuse(out)
    run_pipeline(spark, cfg, output=str(out), run_date=other, stages=["propagate"])
    other_rows = sorted((r["id"], r["label"]) for r in _rows(out, "predictions", other))
    run_pipeline(spark, cfg, output=str(out), run_date=DATE, stages=["propagate"])
    first = json.loads((out / "runs" / DATE / "_manifest.json").read_text())
    run_pipeline(spark, cfg, output=str(out), run_date=DATE, stages=["propagate"])
    second = json.loads((out / "runs" / DATE / "_manifest.json").read_text())
    # the same config and date: the same run id, recomputed (no work state survives a success) and
    # republished -- new files, the same rows
    assert second["run_id"] == first["run_id"] and second["resumed_stages"] == []
    for table in ("embeddings", "predictions"):
        assert second["tables"][table]["rows"] == first["tables"][table]["rows"] == 2708
        assert second["tables"][table]["sha256"] != first["tables"][table]["sha256"]  # a new partition
    rows = _rows(out, "predictions")
    assert len(rows) == 2708 and len({r["id"] for r in rows}) == 2708
    assert sorted((r["id"], r["label"]) for r in _rows(out, "predictions", other)) == other_rows
    all_rows = spark.read.parquet(str(out / "outputs" / "predictions"))
    assert all_rows.count() == 2 * 2708


def test_cli_failures_are_one_line(spark, trained, tmp_path, capsys) -> None:
    out, _ = trained
    bad_model = tmp_path / "model"
    bad_model.mkdir()
    src = out / "runs" / DATE / "model"
    (bad_model / "model.json").write_text((src / "model.json").read_text())
    data = bytearray((src / "model.npz").read_bytes())
    data[100] ^= 0xFF
    (bad_model / "model.npz").write_bytes(bytes(data))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("pipeline: [oops\n")
    cases = [
        (["nightly", "--graph", str(tmp_path / "missing"), "--output", str(tmp_path / "o1")], 3, "no such directory"),
        (["nightly", "--config", str(bad_yaml), "--output", str(tmp_path / "o2")], 2, "not valid YAML"),
        (["propagate", "--graph", str(SAMPLE_GRAPH), "--model", str(bad_model), "--output", str(tmp_path / "o3"),
          "--run-date", DATE], 3, "sha256"),
    ]
    for argv, code, needle in cases:
        rc = main(argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("lepton-spark:")]
        assert rc == code, (argv, err)
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "o3" / "outputs").exists()


def test_analytics_on_spark_reuse_the_propagation_blocks(spark, tmp_path, caplog) -> None:
    """With the analytics on the Spark engine, the nightly packs Cora's edges once: propagate's blocks
    serve PageRank, components (symmetric graph) and LPA, with the same tables as the driver path."""
    import logging

    from lepton_spark.analytics import local

    cfg = _cfg("analytics.local_max_edges=0", "analytics.lpa_iters=3")
    with caplog.at_level(logging.INFO, logger="lepton_spark"):
        run_pipeline(spark, cfg, output=str(tmp_path), run_date=DATE,
                     stages=["build", "train", "propagate", "analytics"])
    msgs = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("blocks: ") for m in msgs) == 1, [m for m in msgs if m.startswith("blocks")]
    assert any("reusing the propagation's edge blocks" in m for m in msgs)
    e = pq.read_table(SAMPLE_GRAPH / "edges").to_pydict()
    ids = np.sort(np.array(pq.read_table(SAMPLE_GRAPH / "vertices").column("id").to_pylist()))
    src, dst = np.array(e["src"]), np.array(e["dst"])
    pr = {r["id"]: r["pagerank"] for r in _rows(tmp_path, "pagerank")}
    np.testing.assert_allclose([pr[i] for i in ids], local.pagerank(ids, src, dst, 0.15, 20), rtol=1e-9)
    comm = {r["id"]: r["label"] for r in _rows(tmp_path, "communities")}
    assert [comm[i] for i in ids] == local.label_propagation(ids, src, dst, 3).tolist()


def test_driver_features_of_a_small_validated_graph(spark, tmp_path) -> None:
    """The forward pass reads a small validated graph's features on the driver: the same matrix as
    Spark reads, sorted by id; not when the plan is forced to partitioned, the matrix passes the
    broadcast limit, or the graph is not validated (then Spark reads and checks them)."""
    import json
    import shutil

    from lepton_spark.config import Config, GraphConfig
    from lepton_spark.pipeline.context import RunContext
    from lepton_spark.pipeline.stages import driver_features

    meta = json.loads((SAMPLE_GRAPH / "_graph.json").read_text())
    n, dim = meta["num_vertices"], meta["num_features"]

    def ctx(graph_dir, **graph):
        return RunContext(spark=spark, cfg=Config(graph=GraphConfig(**graph)), output=str(tmp_path / "out"),
                          run_date=DATE, run_id="test", resume=False, graph_dir=str(graph_dir))

    ids, x = driver_features(ctx(SAMPLE_GRAPH), n, dim)
    rows = spark.read.parquet(str(SAMPLE_GRAPH / "vertices")).select("id", "features").toPandas().sort_values("id")
    assert ids.tolist() == rows["id"].tolist() and x.dtype == np.float32
    np.testing.assert_array_equal(x, np.stack(rows["features"].to_numpy()).astype(np.float32))
    assert driver_features(ctx(SAMPLE_GRAPH, plan="partitioned"), n, dim) is None
    assert driver_features(ctx(SAMPLE_GRAPH, broadcast_max_bytes=n * dim * 4 - 1), n, dim) is None
    assert driver_features(ctx(SAMPLE_GRAPH), n + 1, dim) is None  # other vertices than counted
    unvalidated = tmp_path / "g"
    shutil.copytree(SAMPLE_GRAPH, unvalidated)
    (unvalidated / "_graph.json").write_text(json.dumps({**meta, "validated": False}))
    assert driver_features(ctx(unvalidated), n, dim) is None


def test_unavailable_engine_fails_before_any_stage(spark, tmp_path, capsys) -> None:
    """graph.engine=graphframes without its jar (the test session has none): exit 2 before any stage
    runs, nothing staged, published or left behind."""
    from lepton_spark.graph.engine import graphframes_status

    if graphframes_status(spark)[0]:
        pytest.fail("the test session must not have the GraphFrames jar (tests/test_graphframes_backend.py "
                    "runs it in a subprocess)")
    out = tmp_path / "out"
    rc = main(["analytics", "--graph", str(SAMPLE_GRAPH), "--output", str(out), "--run-date", DATE,
               "--set", "graph.engine=graphframes"])
    err = capsys.readouterr().err
    assert rc == 2 and "graph engine 'graphframes' was requested but is unavailable" in err, err
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_propagate_takes_the_features_the_train_stage_read(spark, tmp_path, caplog) -> None:
    """A nightly on dense features hands the matrix the train stage read on the driver to the propagate
    stage (logged; read and sorted once); its embeddings equal those of the propagate subcommand with
    the same model, which reads the features itself. ``driver_features`` takes kept features only for
    the same graph and shape with sorted ids, once."""
    import logging

    from lepton_spark.config import Config
    from lepton_spark.pipeline.context import RunContext
    from lepton_spark.pipeline.stages import driver_features

    from .rawgraph import N, nightly_overrides, write_raw_graph

    raw = write_raw_graph(tmp_path / "raw")
    cfg = load_config(None, [*nightly_overrides(*raw), "pipeline.stages=[build, train, propagate]"])
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="lepton_spark"):
        run_pipeline(spark, cfg, output=str(out), run_date=DATE)
    assert "features the train stage read" in caplog.text
    run_dir = out / "runs" / DATE
    again = tmp_path / "again"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lepton_spark"):
        assert main(["propagate", "--graph", str(run_dir / "graph" / "graph"), "--model", str(run_dir / "model"),
                     "--output", str(again), "--run-date", DATE]) == 0
    assert "features the train stage read" not in caplog.text
    got = {r["id"]: r["embedding"] for r in _rows(out, "embeddings")}
    want = {r["id"]: r["embedding"] for r in _rows(again, "embeddings")}
    assert got.keys() == want.keys() and len(got) > 0.9 * N
    for i in got:
        np.testing.assert_array_equal(np.asarray(got[i]), np.asarray(want[i]))

    graph = run_dir / "graph" / "graph"
    ctx = RunContext(spark=spark, cfg=Config(), output=str(tmp_path / "x"), run_date=DATE, run_id="t", resume=False,
                     graph_dir=str(graph))
    meta = json.loads((graph / "_graph.json").read_text())
    n, dim = meta["num_vertices"], meta["num_features"]
    ids, x = driver_features(ctx, n, dim)  # read with pyarrow
    for kept, taken in [((str(graph), ids, x), True), (("elsewhere", ids, x), False),
                        ((str(graph), ids, x[:, :-1]), False), ((str(graph), ids[::-1].copy(), x), False)]:
        ctx.held_features = kept
        got_ids, got_x = driver_features(ctx, n, dim)
        assert ctx.held_features is None
        assert (got_x is x) == taken
        np.testing.assert_array_equal(got_ids, ids)
        np.testing.assert_array_equal(got_x, x)


def test_the_manifest_keeps_the_dates_earlier_tables(spark, trained, tmp_path, caplog, capsys) -> None:
    """A run that publishes some tables of a date (here: propagate alone, after analytics alone) keeps the
    previous manifest's entries of the others while their partitions are the ones it named, so a
    consistent read of the earlier tables still works; an entry whose partition changed is dropped."""
    from lepton_spark.pipeline.publish import RUN_MARKER
    from lepton_spark.pipeline.runner import read_output

    trained_out, _ = trained
    out, analytics = str(tmp_path / "out"), ["pagerank", "components", "communities"]
    first = run_pipeline(spark, _cfg(), output=out, run_date=DATE, stages=["analytics"])
    assert sorted(first["tables"]) == sorted(analytics) and first["earlier_tables"] == []
    second = run_pipeline(spark, _reuse(trained_out), output=out, run_date=DATE, stages=["propagate"])
    on_disk = json.loads((tmp_path / "out" / "runs" / DATE / "_manifest.json").read_text())
    assert on_disk["earlier_tables"] == second["earlier_tables"] == sorted(analytics)
    assert sorted(on_disk["tables"]) == sorted([*analytics, "embeddings", "predictions"])
    assert {t: on_disk["tables"][t] for t in analytics} == {t: first["tables"][t] for t in analytics}
    assert on_disk["tables"]["predictions"]["run_id"] == second["run_id"] != first["run_id"]
    assert read_output(spark, out, "pagerank", DATE, consistent=True).count() == 2708
    assert read_output(spark, out, "predictions", DATE, consistent=True).count() == 2708

    # pagerank's partition replaced behind the manifest's back: no longer carried over
    marker = tmp_path / "out" / "outputs" / "pagerank" / f"run_date={DATE}" / RUN_MARKER
    marker.write_text(f"someone-else\n{'0' * 32}\n")
    caplog.clear()
    with caplog.at_level("WARNING", logger="lepton_spark"):
        third = run_pipeline(spark, _reuse(trained_out), output=out, run_date=DATE, stages=["propagate"])
    assert third["earlier_tables"] == ["communities", "components"]
    assert "table pagerank: the previous manifest names run" in caplog.text
    assert sorted(third["tables"]) == ["communities", "components", "embeddings", "predictions"]
    # the CLI's JSON line lists what the command published, not the tables it carried over
    rc = main(["propagate", "--graph", str(SAMPLE_GRAPH), "--model", str(trained_out / "runs" / DATE / "model"),
               "--output", out, "--run-date", DATE])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and sorted(line["tables"]) == ["embeddings", "predictions"]
    on_disk = json.loads((tmp_path / "out" / "runs" / DATE / "_manifest.json").read_text())
    assert on_disk["earlier_tables"] == ["communities", "components"]
