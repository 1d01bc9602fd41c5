"""Turn the user's feature representation into one ``array<float>`` column.

Supported: an array of numbers, a Spark ML vector, a string of numbers (separated by spaces, commas or
semicolons, optionally in brackets), or a list of numeric columns (``build.feature_cols``). Anything
else is rejected with a message that names the column and its type.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lepton_spark.errors import InvalidInputError

FLOAT_ARRAY = T.ArrayType(T.FloatType())
_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)


def features_column(df: DataFrame, features_col: str, feature_cols: list[str], where: str) -> Column | None:
    """A Column expression giving ``array<float>`` features (None when the graph has no features)."""
    if feature_cols:
        missing = [c for c in feature_cols if c not in df.columns]
        if missing:
            raise InvalidInputError(f"{where}: feature column {missing[0]!r} not found (columns: {', '.join(df.columns)})")
        bad = [c for c in feature_cols if not isinstance(df.schema[c].dataType, _NUMERIC)]
        if bad:
            raise InvalidInputError(
                f"{where}: feature column {bad[0]!r} is {df.schema[bad[0]].dataType.simpleString()}, not numeric")
        return F.array(*[F.col(c).cast("float") for c in feature_cols])
    if not features_col:
        return None
    if features_col not in df.columns:
        raise InvalidInputError(
            f"{where}: features column {features_col!r} not found (columns: {', '.join(df.columns)}); "
            "set build.features_col, build.feature_cols, or features_col: '' for a graph without features")
    dtype = df.schema[features_col].dataType
    col = F.col(features_col)
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, _NUMERIC):
        return col.cast(FLOAT_ARRAY)
    if isinstance(dtype, T.StringType):
        stripped = F.regexp_replace(F.trim(col), r"^[\[\(]|[\]\)]$", "")
        parts = F.split(F.trim(stripped), r"[\s,;]+")
        # try_cast: a token that is not a number becomes null, which the validation rule then rejects
        return F.when(F.trim(stripped) == "", F.lit(None).cast(FLOAT_ARRAY)).otherwise(
            F.transform(parts, try_float))
    if dtype.typeName() == "vector" or type(dtype).__name__ == "VectorUDT":
        from pyspark.ml.functions import vector_to_array

        return vector_to_array(col, "float32").cast(FLOAT_ARRAY)
    raise InvalidInputError(
        f"{where}: features column {features_col!r} has type {dtype.simpleString()}; supported: an array of "
        "numbers, an ML vector, a string of numbers, or build.feature_cols (numeric columns)")


def try_float(c: Column) -> Column:
    """String/number -> float; null when it is not a number (also under ANSI mode)."""
    if hasattr(c, "try_cast"):  # Spark >= 4.0
        return c.try_cast("float")
    return c.cast("float")  # Spark 3.5 (ANSI off by default): an invalid cast is null


def try_int(c: Column) -> Column:
    """Like :func:`try_float` for integer labels; 3.0 -> 3, 3.5 and "x" -> null."""
    as_double = c.try_cast("double") if hasattr(c, "try_cast") else c.cast("double")
    return F.when(as_double == F.floor(as_double), as_double.cast("int"))
