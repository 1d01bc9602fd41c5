"""Pregel builder (GraphFrames 0.12 API) on the builtin engine: semantics, options, checkpoints, plan."""

from __future__ import annotations

import logging

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lepton_spark.graph.frame import GraphFrame
from lepton_spark.graph.pregel import Pregel

pytestmark = pytest.mark.engine


def rows(df, *cols):
    return sorted(tuple(r[c] for c in cols) for r in df.collect())


@pytest.fixture(scope="module")
def gf_example(spark):
    """The graph of GraphFrames' Pregel PageRank test, vertices carrying their out-degree."""
    e = spark.createDataFrame([(0, 1), (1, 2), (2, 4), (2, 0), (3, 4), (4, 0), (4, 2)], "src long, dst long")
    v = e.groupBy(F.col("src").alias("id")).agg(F.count(F.lit(1)).alias("outDegree"))
    return GraphFrame(v, e)


@pytest.fixture(scope="module")
def chain(spark):
    """1 -> 2 -> 3 -> 4 plus an isolated 5; vertices carry x = 10 * id."""
    v = spark.createDataFrame([(i, 10 * i) for i in range(1, 6)], "id long, x long")
    e = spark.createDataFrame([(1, 2, 0.5), (2, 3, 1.5), (3, 4, 2.5)], "src long, dst long, w double")
    return GraphFrame(v, e)


def pagerank_pregel(g: GraphFrame, early: bool = False) -> DataFrame:
    alpha, n = 0.15, 5
    return (
        g.pregel.setMaxIter(5)
        .setEarlyStopping(early)
        .withVertexColumn("rank", F.lit(1.0 / n), F.coalesce(Pregel.msg(), F.lit(0.0)) * F.lit(1.0 - alpha) + F.lit(alpha / n))
        .sendMsgToDst(Pregel.src("rank") / Pregel.src("outDegree"))
        .aggMsgs(F.sum(Pregel.msg()))
        .run()
    )


def test_graphframes_pagerank_example(gf_example, caplog):
    with caplog.at_level(logging.INFO, logger="lepton_spark.graph.pregel"):
        ranks = pagerank_pregel(gf_example)
    assert ranks.columns == ["id", "outDegree", "_pregel_is_active", "rank"]
    assert [round(r, 3) for _, r in rows(ranks, "id", "rank")] == [0.245, 0.224, 0.303, 0.03, 0.197]
    assert ranks.is_cached
    lines = [r.getMessage() for r in caplog.records if "pregel iteration" in r.getMessage()]
    assert len(lines) == 5 and "7 messages" in lines[0] and "s" in lines[0]
    assert "(checkpoint)" in lines[1]  # default interval 2, reliable checkpoint dir from the session
    ranks.unpersist()
    early = pagerank_pregel(gf_example, early=True)
    assert [round(r, 3) for _, r in rows(early, "id", "rank")] == [0.245, 0.224, 0.303, 0.03, 0.197]


def test_updates_are_synchronous_and_state_columns_visible(chain):
    # b must read a's previous value; messages may read additional columns and the active flag
    res = (
        chain.pregel.setMaxIter(3).setCheckpointInterval(0)
        .withVertexColumn("a", F.lit(0), F.col("a") + 1)
        .withVertexColumn("b", F.lit(0), F.col("a"))
        .withVertexColumn("got", F.lit(None).cast("long"), Pregel.msg())
        .sendMsgToDst(F.when(Pregel.src("_pregel_is_active"), Pregel.src("a") * 100 + Pregel.src("x")))
        .aggMsgs(F.max(Pregel.msg()))
        .run()
    )
    # after 3 iterations a = 3, b = previous a = 2; got = src's a (=2 before the last update)*100 + src.x
    assert rows(res, "id", "a", "b", "got") == [(1, 3, 2, None), (2, 3, 2, 210), (3, 3, 2, 220), (4, 3, 2, 230), (5, 3, 2, None)]


def test_dst_side_edge_columns_and_both_directions(chain):
    # message to dst reads dst.x (dst join) and edge.w without required_edge_columns (our decision)
    res = (
        chain.pregel.setMaxIter(1).setCheckpointInterval(0)
        .withVertexColumn("v", F.lit(0.0), F.coalesce(Pregel.msg(), F.lit(-1.0)))
        .sendMsgToDst(Pregel.dst("x") * Pregel.edge("w"))
        .sendMsgToSrc(Pregel.dst("id").cast("double"))
        .aggMsgs(F.sum(Pregel.msg()))
        .run()
    )
    # 1: receives dst id 2 | 2: 20*0.5 + 3 | 3: 30*1.5 + 4 | 4: 40*2.5 | 5: nothing
    assert rows(res, "id", "v") == [(1, 2.0), (2, 13.0), (3, 49.0), (4, 100.0), (5, -1.0)]
    same = (
        chain.pregel.setMaxIter(1).setCheckpointInterval(0).required_edge_columns("w")
        .required_src_columns("x").required_dst_columns("x")
        .withVertexColumn("v", F.lit(0.0), Pregel.msg())
        .sendMsgToDst(Pregel.edge("w") + Pregel.src("x"))
        .aggMsgs(F.first(Pregel.msg()))
        .run()
    )
    assert rows(same, "id", "v") == [(1, None), (2, 10.5), (3, 21.5), (4, 32.5), (5, None)]
    with pytest.raises(ValueError, match="required edge column"):
        chain.pregel.required_edge_columns("nope").withVertexColumn("v", F.lit(0), F.lit(0)).sendMsgToDst(
            F.lit(1)).aggMsgs(F.sum(Pregel.msg())).run()


def steps_pregel(g: GraphFrame) -> Pregel:
    """Vertex 1 messages 2 while its step counter is < 2; every vertex counts applied iterations."""
    return (
        g.pregel.setCheckpointInterval(0)
        .withVertexColumn("steps", F.lit(0), F.col("steps") + 1)
        .sendMsgToDst(F.when(Pregel.src("steps") < 2, F.lit(1)))  # null messages are dropped
        .aggMsgs(F.sum(Pregel.msg()))
    )


def test_early_stopping_skips_the_empty_iteration(chain):
    assert {s for (s,) in rows(steps_pregel(chain).setMaxIter(6).run(), "steps")} == {6}
    # iterations 1 and 2 send, iteration 3 has no message: it stops there without applying it
    assert {s for (s,) in rows(steps_pregel(chain).setMaxIter(6).setEarlyStopping(True).run(), "steps")} == {2}


def test_vote_to_halt(chain):
    res = (
        steps_pregel(chain).setMaxIter(10)
        .setUpdateActiveVertexExpression(F.col("steps") < 1)
        .setStopIfAllNonActiveVertices(True)
        .run()
    )
    # the active expression reads the previous `steps` (synchronous): 0 -> active, 1 -> inactive
    assert set(rows(res, "steps", "_pregel_is_active")) == {(2, False)}


@pytest.mark.parametrize("read_dst", [False, True])
def test_skip_messages_from_inactive_vertices(chain, read_dst):
    """Only vertex 1 starts active; the value travels one hop per iteration (a frontier)."""
    msg = Pregel.src("val") + (Pregel.dst("x") * 0 if read_dst else F.lit(0))
    res = (
        chain.pregel.setMaxIter(2).setCheckpointInterval(0)
        .setInitialActiveVertexExpression(F.col("id") == 1)
        .setUpdateActiveVertexExpression(Pregel.msg().isNotNull())
        .setSkipMessagesFromNonActiveVertices(True)
        .withVertexColumn("val", F.when(F.col("id") == 1, F.lit(7)).otherwise(F.lit(0)), F.coalesce(Pregel.msg(), F.col("val")))
        .sendMsgToDst(msg)
        .aggMsgs(F.max(Pregel.msg()))
        .run()
    )
    got = rows(res, "id", "val", "_pregel_is_active")
    if read_dst:
        # triplets are kept when src OR dst is active: in iteration 2 the inactive 1 still reaches the
        # active 2, so 2 stays active
        assert got == [(1, 7, False), (2, 7, True), (3, 7, True), (4, 0, False), (5, 0, False)]
    else:
        assert got == [(1, 7, False), (2, 7, False), (3, 7, True), (4, 0, False), (5, 0, False)]


def test_messages_to_missing_ids_and_string_ids(spark):
    v = spark.createDataFrame([("a",), ("b",)], "id string")
    e = spark.createDataFrame([("a", "b"), ("a", "ghost"), ("b", "a")], "src string, dst string")
    res = (
        GraphFrame(v, e).pregel.setMaxIter(1).setCheckpointInterval(0)
        .withVertexColumn("n", F.lit(0), F.coalesce(Pregel.msg(), F.lit(0)))
        .sendMsgToDst(F.lit(1))
        .sendMsgToSrc(F.lit(10))
        .aggMsgs(F.sum(Pregel.msg()).cast("int"))
        .run()
    )
    assert rows(res, "id", "n") == [("a", 1 + 20), ("b", 1 + 10)]  # "ghost" receives nothing, is absent


@pytest.mark.parametrize("local", [False, True])
def test_checkpoint_every_iteration(chain, local, caplog):
    with caplog.at_level(logging.WARNING, logger="lepton_spark.graph.pregel"):
        res = (
            chain.pregel.setMaxIter(3).setCheckpointInterval(1).setUseLocalCheckpoints(local)
            .withVertexColumn("hops", F.when(F.col("id") == 1, F.lit(0)), F.least(F.col("hops"), Pregel.msg()))
            .sendMsgToDst(Pregel.src("hops") + 1)
            .aggMsgs(F.min(Pregel.msg()))
            .run()
        )
    assert rows(res, "id", "hops") == [(1, 0), (2, 1), (3, 2), (4, 3), (5, None)]
    if int(chain.vertices.sparkSession.version.split(".")[0]) >= 4:  # Spark 4 honours spark.checkpoint.dir
        assert not [r for r in caplog.records if "falling back" in r.getMessage()]


def test_reliable_checkpoint_falls_back_to_local(chain, caplog, monkeypatch):
    def broken(self, eager=True):
        raise RuntimeError("Checkpoint directory has not been set in the SparkContext")

    monkeypatch.setattr(type(chain.vertices), "checkpoint", broken)
    with caplog.at_level(logging.WARNING, logger="lepton_spark.graph.pregel"):
        res = (
            chain.pregel.setMaxIter(2).setCheckpointInterval(1)
            .withVertexColumn("s", F.lit(1), F.col("s") + F.coalesce(Pregel.msg(), F.lit(0)))
            .sendMsgToDst(Pregel.src("s"))
            .aggMsgs(F.sum(Pregel.msg()))
            .run()
        )
    assert rows(res, "id", "s") == [(1, 1), (2, 3), (3, 4), (4, 4), (5, 1)]
    warnings_ = [r.getMessage() for r in caplog.records if "falling back to localCheckpoint" in r.getMessage()]
    assert len(warnings_) == 1  # logged once, then local checkpoints for the rest of the run


def test_convergence_extension(chain, caplog):
    with caplog.at_level(logging.INFO, logger="lepton_spark.graph.pregel"):
        res = (
            chain.pregel.setMaxIter(50).setCheckpointInterval(0)
            .withVertexColumn("h", F.lit(1.0), F.col("h") / 2)
            .withVertexColumn("delta", F.lit(None).cast("double"), F.abs(F.col("h") / 2 - F.col("h")))
            .sendMsgToDst(F.lit(0))
            .aggMsgs(F.sum(Pregel.msg()))
            .setConvergence(F.max("delta"), 0.1)
            .run()
        )
    # delta after k iterations is 2^-k: first below 0.1 at k = 4
    assert {h for (h,) in rows(res, "h")} == {1.0 / 16}
    assert any("converged after iteration 4" in r.getMessage() for r in caplog.records)


def test_builder_validation(chain):
    base = chain.pregel
    with pytest.raises(ValueError, match="reserved"):
        base.withVertexColumn("id", F.lit(0), F.lit(0))
    with pytest.raises(ValueError, match="reserved"):
        base.withVertexColumn(Pregel.MSG_COL_NAME, F.lit(0), F.lit(0))
    with pytest.raises(ValueError, match="at least one message"):
        chain.pregel.withVertexColumn("a", F.lit(0), F.lit(0)).aggMsgs(F.sum(Pregel.msg())).run()
    with pytest.raises(ValueError, match="aggMsgs"):
        chain.pregel.withVertexColumn("a", F.lit(0), F.lit(0)).sendMsgToDst(F.lit(1)).run()
    with pytest.raises(ValueError, match="withVertexColumn"):
        chain.pregel.sendMsgToDst(F.lit(1)).aggMsgs(F.sum(Pregel.msg())).run()
    with pytest.raises(ValueError, match="maxIter"):
        chain.pregel.setMaxIter(0).withVertexColumn("a", F.lit(0), F.lit(0)).sendMsgToDst(F.lit(1)).aggMsgs(
            F.sum(Pregel.msg())).run()
    with pytest.raises(ValueError, match="already in the vertices"):
        chain.pregel.withVertexColumn("x", F.lit(0), F.lit(0)).sendMsgToDst(F.lit(1)).aggMsgs(F.sum(Pregel.msg())).run()
    assert str(Pregel.msg()) == str(F.col("_pregel_msg_"))
    assert str(Pregel.src("a")) == str(F.col("src.a")) and str(Pregel.edge("w")) == str(F.col("edge.w"))
    assert isinstance(chain.pregel, Pregel) and chain.pregel is not chain.pregel
