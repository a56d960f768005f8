"""Raw ids as the two files must agree on them.

Surrounding whitespace is stripped, and a whole number written as a float (``"1.0"``, ``"7.00"``)
becomes the integer: spreadsheets and pandas write integer ids that way once a column has a gap. Any
other id (``"007"``, ``"1.5"``, ``"B00X"``) is kept exactly as written.
"""

from __future__ import annotations

import re

import pandas as pd

INTEGRAL_FLOAT = re.compile(r"^([+-]?\d+)\.0*$")


def normalise_id_column(ids: pd.Series) -> pd.Series:
    """Every id of ``ids`` normalised; ids repeat (a user per interaction), so each distinct one once."""
    codes, distinct = pd.factorize(ids)
    normalised = pd.Series(distinct, dtype=str).map(normalise_id)
    return pd.Series(normalised.to_numpy()[codes], index=ids.index, dtype=str)


def normalise_id(raw_id: str) -> str:
    """An id as the two files must agree on it: stripped, a whole float written as an integer."""
    return INTEGRAL_FLOAT.sub(r"\1", raw_id.strip())
