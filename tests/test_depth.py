from fractions import Fraction
import math

import numpy as np
from hypothesis import given, strategies as st

from filtershift.extraction.depth import dense_rank, depth_decile, depth_decile_from_float, relative_depth


def reference_decile(i: int, n: int) -> int:
    if n <= 1:
        return 0
    return max(math.ceil(Fraction(10 * i, n - 1)) - 1, 0)


def test_boundaries_fall_in_the_lower_decile():
    # n_conv = 11: r = i / 10 exactly; 10 * 0.3 = 3.0000000000000004 in floats
    assert [depth_decile(i, 11) for i in range(11)] == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert depth_decile(0, 1) == 0 and relative_depth(0, 1) == 0.0


@given(st.integers(1, 400).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_decile_matches_exact_rational_reference(case):
    i, n = case
    assert depth_decile(i, n) == reference_decile(i, n)
    assert depth_decile_from_float(relative_depth(i, n)) == reference_decile(i, n)


def test_float_deciles_of_imported_depths():
    r = np.array([0.0, 0.05, 0.1, 0.1000001, 0.3, 1.0])
    assert depth_decile_from_float(r).tolist() == [0, 0, 0, 1, 2, 9]


def test_dense_rank_shares_equal_levels():
    assert dense_rank([0, 0, 1, 3, 3, 5]) == ([0, 0, 1, 2, 2, 3], 4)
