"""GraphFrame API (builtin engine): constructor, degrees, triplets, subgraphs, validate, aggregateMessages,
the message-reference analysis behind the pruned plans, and engine selection."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel
from pyspark.testing import assertDataFrameEqual

from lepton_spark.errors import UsageError
from lepton_spark.graph import engine as eng
from lepton_spark.graph.frame import AM, GraphFrame
from lepton_spark.graph.messages import expr_text, struct_use

pytestmark = pytest.mark.engine

JAR_MISSING = ("GraphFrames is not on this session's classpath (by design: tests/test_graphframes_backend.py "
               "runs the real backend in a subprocess)")


@pytest.fixture(autouse=True)
def _no_engine_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eng.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def people(spark):
    """GraphFrames' docs graph shape: ages on vertices, weights on edges, one isolated vertex (6)."""
    v = spark.createDataFrame(
        [(1, "a", 30), (2, "b", 40), (3, "c", 50), (4, "d", 20), (5, "e", 60), (6, "f", 70)],
        "id long, name string, age int",
    )
    e = spark.createDataFrame(
        [(1, 2, 1.0), (2, 3, 2.0), (3, 1, 3.0), (1, 3, 4.0), (4, 1, 5.0), (4, 1, 6.0), (5, 5, 7.0)],
        "src long, dst long, weight double",
    )
    return GraphFrame(v, e)


def rows(df, *cols):
    return sorted(tuple(r[c] for c in cols) for r in df.collect())


# ----------------------------------------------------------------------------- construction


def test_constructor_messages(spark):
    v = spark.createDataFrame([(1, "x")], "vid long, name string")
    e = spark.createDataFrame([(1, 2)], "a long, dst long")
    good_v = spark.createDataFrame([(1,)], "id long")
    with pytest.raises(ValueError, match=re.escape("Vertex ID column id missing from vertex DataFrame, which has columns: vid,name")):
        GraphFrame(v, e)
    with pytest.raises(ValueError, match=re.escape("Source vertex ID column src missing from edge DataFrame, which has columns: a,dst")):
        GraphFrame(good_v, e)
    with pytest.raises(ValueError, match="Destination vertex ID column dst missing"):
        GraphFrame(good_v, spark.createDataFrame([(1, 2)], "src long, b long"))


def test_basic_properties(people):
    g = people
    assert g.vertices.columns == ["id", "name", "age"]
    assert g.nodes is g.vertices
    assert g.edges.columns == ["src", "dst", "weight"]
    assert (GraphFrame.ID, GraphFrame.SRC, GraphFrame.DST, GraphFrame.EDGE, GraphFrame.WEIGHT) == (
        "id", "src", "dst", "edge", "weight")
    assert repr(g).startswith("GraphFrame(v:DataFrame[id: bigint, name: string, age: int], e:DataFrame[src: bigint")


def test_cache_persist_unpersist(people):
    g2 = people.persist(StorageLevel.MEMORY_AND_DISK)
    assert g2 is not people and isinstance(g2, GraphFrame)
    assert g2.vertices.storageLevel == StorageLevel.MEMORY_AND_DISK
    g3 = g2.unpersist()
    assert g3.edges.storageLevel == StorageLevel(False, False, False, False, 1)
    g4 = people.cache()
    assert g4.edges.is_cached
    g4.unpersist()


# ---------------------------------------------------------------------------------- degrees


def test_degrees_multi_edges_self_loops_isolated(spark, people):
    # out: 1->2,1->3 | 2->3 | 3->1 | 4->1 twice | 5->5 ; vertex 6 isolated (absent everywhere)
    assertDataFrameEqual(
        people.outDegrees, spark.createDataFrame([(1, 2), (2, 1), (3, 1), (4, 2), (5, 1)], "id long, outDegree long")
    )
    assertDataFrameEqual(
        people.inDegrees, spark.createDataFrame([(1, 3), (2, 1), (3, 2), (5, 1)], "id long, inDegree long")
    )
    assertDataFrameEqual(
        people.degrees, spark.createDataFrame([(1, 5), (2, 2), (3, 3), (4, 2), (5, 2)], "id long, degree long")
    )


def test_degree_stats_delegates(people):
    stats = people.degree_stats()
    assert stats["isolated"] == 1 and stats["max"] == 5 and stats["min"] == 0


# --------------------------------------------------------------------------------- triplets


def test_triplets_structs_and_inner_join(spark, people):
    t = people.triplets
    assert t.columns == ["src", "edge", "dst"]
    assert t.schema["src"].dataType.fieldNames() == ["id", "name", "age"]
    assert t.schema["edge"].dataType.fieldNames() == ["src", "dst", "weight"]
    got = rows(t.select(F.col("src.name").alias("s"), F.col("edge.weight").alias("w"), F.col("dst.age").alias("a")), "s", "w", "a")
    assert got == [("a", 1.0, 40), ("a", 4.0, 50), ("b", 2.0, 50), ("c", 3.0, 30), ("d", 5.0, 30), ("d", 6.0, 30), ("e", 7.0, 60)]
    dangling = GraphFrame(people.vertices, spark.createDataFrame([(1, 99, 0.5), (1, 2, 0.1)], "src long, dst long, weight double"))
    assert dangling.triplets.count() == 1


# -------------------------------------------------------------------------------- subgraphs


def test_filter_vertices_drops_incident_edges(people):
    g = people.filterVertices("age < 55")  # drops 5 (60) and 6 (70)
    assert rows(g.vertices, "id") == [(1,), (2,), (3,), (4,)]
    assert rows(g.edges, "src", "dst") == [(1, 2), (1, 3), (2, 3), (3, 1), (4, 1), (4, 1)]
    g2 = people.filterVertices(F.col("id") != 1)
    assert rows(g2.edges, "src", "dst") == [(2, 3), (5, 5)]
    with pytest.raises(TypeError):
        people.filterVertices(42)  # type: ignore[arg-type]


def test_filter_edges_keeps_vertices(people):
    g = people.filterEdges(F.col("weight") > 4.5)
    assert g.vertices.count() == 6
    assert rows(g.edges, "src", "dst", "weight") == [(4, 1, 5.0), (4, 1, 6.0), (5, 5, 7.0)]
    assert people.filterEdges("src = dst").edges.count() == 1


def test_drop_isolated_vertices(people):
    g = people.dropIsolatedVertices()
    assert rows(g.vertices, "id") == [(1,), (2,), (3,), (4,), (5,)]
    assert g.edges.count() == 7


def test_as_undirected_and_reversed(people):
    u = people.as_undirected()
    assert u.edges.columns == ["src", "dst", "weight"]
    assert u.edges.count() == 14
    assert rows(u.edges.filter("src = 5"), "src", "dst", "weight") == [(5, 5, 7.0), (5, 5, 7.0)]
    assert rows(u.edges.filter("weight = 1.0"), "src", "dst") == [(1, 2), (2, 1)]
    r = people.as_reversed()
    assert r.edges.columns == ["src", "dst", "weight"]
    assert rows(r.edges, "src", "dst", "weight")[:2] == [(1, 3, 3.0), (1, 4, 5.0)]
    assert r.vertices is people.vertices


# ------------------------------------------------------------------------------- validation


def test_validate(spark, people):
    people.validate()
    dup = GraphFrame(spark.createDataFrame([(1,), (1,), (2,)], "id long"), spark.createDataFrame([(1, 2)], "src long, dst long"))
    with pytest.raises(ValueError, match=re.escape("Graph contains (1) duplicate vertices.")):
        dup.validate()
    wide = GraphFrame(spark.createDataFrame([(1,)], "id long"), spark.createDataFrame([(2, 3), (3, 4)], "src long, dst long"))
    with pytest.raises(ValueError, match=re.escape("Graph is inconsistent: edges has 3 vertices, but vertices has 1 vertices.")):
        wide.validate()
    missing = GraphFrame(spark.createDataFrame([(1,), (2,), (3,)], "id long"), spark.createDataFrame([(1, 4)], "src long, dst long"))
    with pytest.raises(ValueError, match="Found 1 edges src/dst that are not in the vertices DataFrame"):
        missing.validate()
    missing.validate(check_vertices=False)


# ------------------------------------------------------------------------- aggregateMessages


def expected_neighbour_sums(g):
    """Python reference: per vertex, sum of ages received over both directions and message count."""
    age = {r["id"]: r["age"] for r in g.vertices.collect()}
    out: dict[int, list[int]] = {}
    for r in g.edges.collect():
        out.setdefault(r["dst"], []).append(age[r["src"]])
        out.setdefault(r["src"], []).append(age[r["dst"]])
    return sorted((k, sum(v), len(v)) for k, v in out.items())


def test_aggregate_messages_both_directions_several_aggs(people):
    res = people.aggregateMessages(
        [F.sum(AM.msg).alias("summedAges"), F.count(AM.msg).alias("n")],
        sendToSrc=[AM.dst["age"]],
        sendToDst=[AM.src["age"]],
    )
    assert res.columns == ["id", "summedAges", "n"]  # each aggregate once (no duplicated first agg)
    assert rows(res, "id", "summedAges", "n") == expected_neighbour_sums(people)
    assert 6 not in {r["id"] for r in res.collect()}  # receives nothing -> absent
    assert res.is_cached
    res.unpersist()


def test_aggregate_messages_sql_strings_and_single_values(people):
    res = people.aggregateMessages(["sum(MSG) AS s"], sendToDst=["src['age']"])
    assert rows(res, "id", "s") == [(1, 50 + 20 + 20), (2, 30), (3, 30 + 40), (5, 60)]
    with pytest.warns(DeprecationWarning, match="(aggCol|sendToDst) is deprecated"):
        single = people.aggregateMessages(F.max(AM.msg).alias("m"), sendToDst=AM.edge["weight"])
    assert rows(single, "id", "m") == [(1, 6.0), (2, 1.0), (3, 4.0), (5, 7.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        s2 = people.aggregateMessages("min(MSG) AS lo", sendToSrc="dst.id")
    assert rows(s2, "id", "lo") == [(1, 2), (2, 3), (3, 1), (4, 1), (5, 5)]


def test_aggregate_messages_struct_message_and_nulls(spark, people):
    res = people.aggregateMessages(
        [F.sum(AM.msg["a"]).alias("ages"), F.sum(AM.msg["w"]).alias("w")],
        sendToDst=[AM.src["age"].alias("a"), AM.edge["weight"].alias("w")],
    )
    assert rows(res, "id", "ages", "w") == [(1, 90, 14.0), (2, 30, 1.0), (3, 70, 6.0), (5, 60, 7.0)]
    # null messages reach the aggregate (GraphFrames does not filter them): vertex 2 only gets nulls
    nul = people.aggregateMessages(
        [F.sum(AM.msg).alias("s"), F.count(F.lit(1)).alias("n")],
        sendToDst=[F.when(AM.dst["id"] != 2, AM.src["age"])],
    )
    assert rows(nul, "id", "s", "n") == [(1, 90, 3), (2, None, 1), (3, 70, 2), (5, 60, 1)]


def test_aggregate_messages_errors(people):
    with pytest.raises(TypeError, match="At least one aggregation column"):
        people.aggregateMessages([], sendToDst=[AM.src["age"]])
    with pytest.raises(ValueError, match="Either `sendToSrc`, `sendToDst`, or both"):
        people.aggregateMessages([F.sum(AM.msg)])
    with pytest.raises(TypeError, match="not a mix"):
        people.aggregateMessages([F.sum(AM.msg)], sendToDst=[AM.src["age"], "dst.age"])


def test_aggregate_messages_string_ids_and_missing_receivers(spark):
    v = spark.createDataFrame([("a", 1), ("b", 2), ("c", 3)], "id string, x int")
    e = spark.createDataFrame([("a", "b"), ("b", "c"), ("a", "zz"), ("c", "a")], "src string, dst string")
    g = GraphFrame(v, e)
    res = g.aggregateMessages([F.sum(AM.msg).alias("s")], sendToDst=[AM.src["x"]])
    assert rows(res, "id", "s") == [("a", 3), ("b", 1), ("c", 2)]  # "zz" is not a vertex -> dropped
    res2 = g.aggregateMessages([F.collect_list(AM.msg).alias("l")], sendToSrc=[AM.dst["x"]])
    assert rows(res2.select("id", F.array_sort("l").alias("l")), "id", "l") == [("a", [2]), ("b", [3]), ("c", [1])]


def _explain(df, capsys) -> str:
    capsys.readouterr()
    df.explain()
    return capsys.readouterr().out


def test_aggregate_messages_prunes_columns_and_skips_dst_join(spark, tmp_path: Path, capsys):
    """Wide vertex column `payload` is never read, and the dst side is joined only when used."""
    vdir, edir = str(tmp_path / "v"), str(tmp_path / "e")
    spark.createDataFrame([(i, i * 10, "x" * 50) for i in range(6)], "id long, age long, payload string").write.parquet(vdir)
    spark.createDataFrame([(i, (i + 1) % 6, float(i), "t") for i in range(6)], "src long, dst long, w double, tag string").write.parquet(edir)
    g = GraphFrame(spark.read.parquet(vdir), spark.read.parquet(edir))

    only_src = g.aggregateMessages([F.sum(AM.msg).alias("s")], sendToDst=[AM.src["age"] * AM.edge["w"]])
    plan = _explain(only_src, capsys)
    schemas = re.findall(r"ReadSchema: (struct<[^>]*>)", plan)
    assert "payload" not in plan and "tag" not in plan
    assert sorted(schemas) == sorted(["struct<src:bigint,dst:bigint,w:double>", "struct<id:bigint,age:bigint>",
                                      "struct<id:bigint>"])  # src side + receivers check, no dst join
    assert rows(only_src, "id", "s") == sorted(((i + 1) % 6, float(i * 10 * i)) for i in range(6))

    to_src = g.aggregateMessages([F.sum(AM.msg).alias("s")], sendToSrc=[AM.dst["id"] + AM.edge["w"]])
    plan = _explain(to_src, capsys)
    assert re.findall(r"ReadSchema: (struct<[^>]*>)", plan) in (
        ["struct<src:bigint,dst:bigint,w:double>", "struct<id:bigint>"],
        ["struct<id:bigint>", "struct<src:bigint,dst:bigint,w:double>"],
    )

    with_dst = g.aggregateMessages([F.max(AM.msg).alias("m")], sendToSrc=[AM.dst["age"]])
    plan = _explain(with_dst, capsys)
    assert plan.count("ReadSchema: struct<id:bigint,age:bigint>") == 1  # dst side reads age
    assert plan.count("ReadSchema: struct<id:bigint>") == 1  # src side reads only the id
    assert "payload" not in plan
    assert rows(with_dst, "id", "m") == sorted((i, ((i + 1) % 6) * 10) for i in range(6))

    whole = g.aggregateMessages([F.first(AM.msg).alias("j")], sendToDst=[F.to_json(AM.src)])
    assert "payload" in _explain(whole, capsys)  # a whole-struct use keeps every column
    for df in (only_src, to_src, with_dst, whole):
        df.unpersist()


# ------------------------------------------------------------------- reference analysis unit


@pytest.mark.parametrize(
    ("text", "used", "whole", "fields"),
    [
        ("src.age + 1", True, False, {"age"}),
        ("src['age'] * edge['w']", True, False, {"age"}),
        ("SRC.Age", True, False, {"age"}),
        ("`src`.`a b` + src.ages", True, False, {"a b", "ages"}),
        ("to_json(src)", True, True, set()),
        ("CASE WHEN =(src, dst) THEN 1 END", True, True, set()),
        ("src.*", True, True, set()),
        ("dst.age + mysrc.x + a.src", False, False, set()),
        ("'src'", True, True, set()),
    ],
)
def test_struct_use_text(text, used, whole, fields):
    u = struct_use([text], "src", ["id", "age", "ages", "a b"])
    assert (u.used, u.whole, set(u.fields)) == (used, whole, fields)


def test_struct_use_on_column_reprs(spark):
    cols = [AM.src["age"], F.col("src.age") + 1, AM.dst["id"], F.col("dst").getField("id"), F.expr("dst['id'] + 1")]
    texts = [expr_text(c) for c in cols]
    assert struct_use(texts, "src", ["id", "age"]).fields == {"age"}
    assert struct_use(texts, "dst", ["id", "age"]).needs_only({"id"})
    assert not struct_use([expr_text(F.to_json(AM.dst))], "dst", ["id", "age"]).needs_only({"id"})
    assert not struct_use([expr_text(AM.src["age"])], "dst", ["id"]).used


# ----------------------------------------------------------------------------------- engine


def test_resolve_engine_builtin_here(spark, monkeypatch):
    ok, why = eng.graphframes_status(spark)
    if ok:
        pytest.skip("GraphFrames is on the classpath in this session")
    assert "not on the classpath" in why or "does not import" in why or "Spark Connect session" in why
    assert eng.resolve_engine(spark) == "builtin"
    assert eng.resolve_engine(spark, "auto") == "builtin"
    assert eng.resolve_engine(spark, "BUILTIN") == "builtin"
    monkeypatch.setenv(eng.ENV_VAR, "builtin")
    assert eng.resolve_engine(spark) == "builtin"


def test_forcing_graphframes_raises_clear_error(spark, people, monkeypatch):
    if eng.graphframes_status(spark)[0]:
        pytest.skip("GraphFrames is on the classpath in this session")
    with pytest.raises(eng.EngineUnavailableError, match="'graphframes' was requested but is unavailable"):
        eng.resolve_engine(spark, "graphframes")
    g = GraphFrame(people.vertices, people.edges, engine="graphframes")
    with pytest.raises(UsageError, match=r"GraphFrames JVM package not on the classpath|does not import|"
                                         r"Spark Connect session"):
        g.connectedComponents()
    monkeypatch.setenv(eng.ENV_VAR, "graphframes")
    with pytest.raises(eng.EngineUnavailableError):
        people.pageRank(maxIter=1)
    with pytest.raises(UsageError, match="unknown graph engine 'gx'"):
        eng.resolve_engine(spark, "gx")


def test_graphframes_engine_matches_builtin(spark, people):
    """Runs only where the GraphFrames jar is on the classpath (never on these machines)."""
    if not eng.graphframes_status(spark)[0]:
        pytest.skip(JAR_MISSING)
    gf = GraphFrame(people.vertices, people.edges, engine="graphframes")
    builtin = GraphFrame(people.vertices, people.edges, engine="builtin")
    assert rows(gf.connectedComponents(), "id", "component") == rows(builtin.connectedComponents(), "id", "component")
    a = dict(rows(gf.pageRank(maxIter=10).vertices, "id", "pagerank"))
    b = dict(rows(builtin.pageRank(maxIter=10).vertices, "id", "pagerank"))
    assert all(abs(a[k] - b[k]) < 1e-6 for k in a)
    assert rows(gf.labelPropagation(5), "id", "label") == rows(builtin.labelPropagation(5), "id", "label")
