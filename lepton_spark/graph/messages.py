"""Message plumbing shared by ``aggregateMessages`` and ``Pregel``: reference analysis and triplet plans.

Why this module exists: GraphFrames builds *full* triplets (every vertex column on both sides, every
edge column) before it evaluates a message, and always joins the destination side. Both are costly
on wide vertex tables (feature vectors) and on large edge tables. We avoid both:

* **Field pruning is left to Catalyst.** The ``src`` / ``dst`` / ``edge`` structs are built *above*
  the joins from flat, prefixed columns, and the message expressions are evaluated in a projection of
  their own. Spark's optimizer then collapses ``struct(a, b, c).a`` to ``a`` and prunes every column
  no message reads, down to the scan (verified in the tests with ``explain``). A whole-struct use
  (``to_json(src)``, ``src = dst``) keeps the whole struct, so pruning is always correct.
* **Which joins to build is decided here**, from the text of the message expressions (the only part
  Catalyst cannot do for us: an inner join changes cardinality, so the optimizer cannot drop it).
  The analysis is deliberately conservative: it can only err towards *more* columns / *more* joins,
  never fewer. A struct name that appears bare (``src``), quoted (``'dst'``), or followed by
  anything but a known field counts as a use of the whole struct.

The text of a :class:`~pyspark.sql.Column` is its ``str()`` (``Column<'src.age + 1'>``), which both
classic and Spark Connect columns provide; string messages are SQL text already. We deliberately do
not probe the analyzer with failing queries: pyspark 4 logs every failed analysis at ERROR level.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

ID = "id"
SRC = "src"
DST = "dst"
EDGE = "edge"

_COLUMN_REPR = re.compile(r"^Column<'(.*)'>$", re.DOTALL)


def to_column(c: Column | str) -> Column:
    """A message or aggregate given as SQL text becomes ``expr(text)``; a Column is returned as is."""
    if isinstance(c, Column):
        return c
    if isinstance(c, str):
        return F.expr(c)
    raise TypeError(f"Provide message either as `Column` or `str`, not {type(c).__name__}")


def expr_text(c: Column | str) -> str:
    """The SQL-like text of an expression: the string itself, or the Column's ``str`` without wrapper."""
    if isinstance(c, str):
        return c
    text = str(c)
    m = _COLUMN_REPR.match(text)
    return m.group(1) if m else text


def quote(name: str) -> str:
    """Backtick-quote a column name so dots and spaces in it are taken literally by ``F.col``."""
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class StructUse:
    """How the message expressions use one triplet struct (``src``, ``dst`` or ``edge``).

    ``used``: the name occurs at all. ``whole``: it is used as a value (or in a form we do not
    recognise), so every field must be kept. ``fields``: the fields accessed by name (lower case);
    meaningful only when ``whole`` is false.
    """

    used: bool
    whole: bool
    fields: frozenset[str]

    def needs_only(self, allowed: set[str]) -> bool:
        """True when the struct is unused or only ``allowed`` fields (lower case) are read from it."""
        return not self.used or (not self.whole and self.fields <= allowed)


def struct_use(texts: Sequence[str], name: str, fields: Sequence[str]) -> StructUse:
    """Analyse how ``texts`` use the struct ``name`` whose fields are ``fields`` (see module docstring).

    Matching is case-insensitive like Spark's default resolver. After ``name.`` or ``name['`` every
    known field that is a prefix of the following text counts as accessed (a superset when one field
    name is a prefix of another, which is harmless); no known field there means "whole struct".
    """
    lowered = sorted({f.lower() for f in fields}, key=len, reverse=True)
    token = re.compile(r"(?<![\w.`])(?:`" + re.escape(name) + r"`|" + re.escape(name) + r")(?![\w`])", re.I)
    used = False
    whole = False
    found: set[str] = set()
    for text in texts:
        for m in token.finditer(text):
            used = True
            rest = text[m.end():]
            if rest.startswith("."):
                body = rest[1:]
            elif rest.startswith("['") or rest.startswith('["'):
                body = rest[2:]
            elif rest.startswith("["):
                body = rest[1:]
            else:
                whole = True
                continue
            hits = _field_prefixes(body, lowered)
            if hits:
                found.update(hits)
            else:
                whole = True
    return StructUse(used=used, whole=whole, fields=frozenset(found))


def _field_prefixes(body: str, lowered: Sequence[str]) -> set[str]:
    """Known field names (lower case) that ``body`` starts with, optionally backtick-quoted.

    The name must end there: the next character is not a word character (``age`` does not match
    ``ages``); a closing quote, bracket or backtick, an operator or the end of text all qualify.
    """
    low = body.lower()
    if low.startswith("`"):
        low = low[1:]
    hits: set[str] = set()
    for f in lowered:
        if low.startswith(f):
            nxt = low[len(f):len(f) + 1]
            if not nxt or not (nxt.isalnum() or nxt == "_"):
                hits.add(f)
    return hits


def prefixed(df: DataFrame, prefix: str) -> tuple[DataFrame, list[str]]:
    """``df`` with every column renamed ``<prefix><i>`` (no clashes after joins), and the new names."""
    names = [f"{prefix}{i}" for i in range(len(df.columns))]
    return df.select(*[F.col(quote(c)).alias(n) for c, n in zip(df.columns, names)]), names


def struct_of(names: Sequence[str], flat: Sequence[str]) -> Column:
    """``struct(flat_i AS names_i, ...)``: rebuild a triplet struct from prefixed flat columns."""
    return F.struct(*[F.col(f).alias(n) for n, f in zip(names, flat)])


def explode_messages(
    df: DataFrame, targets: Sequence[tuple[str, str]], id_name: str, msg_name: str
) -> DataFrame:
    """One row per (target id, message) from columns computed in ``df``.

    ``targets`` pairs a target-id column with a message column of ``df``. A single pair is a plain
    projection; several go through ``explode(array(struct(id, msg), ...))`` so every message kind is
    produced in one pass over the triplets (no union, no second scan). Message types must be
    compatible (Spark widens them as for ``array``).
    """
    if len(targets) == 1:
        tid, m = targets[0]
        return df.select(F.col(tid).alias(id_name), F.col(m).alias(msg_name))
    packed = F.array(*[F.struct(F.col(t).alias(id_name), F.col(m).alias(msg_name)) for t, m in targets])
    return df.select(F.explode(packed).alias("__m")).select(
        F.col("__m." + id_name).alias(id_name), F.col("__m." + msg_name).alias(msg_name)
    )
