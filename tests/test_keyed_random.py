"""Batched keyed generators (``mscsim._keyed_random``) draw exactly what one ``default_rng`` per row draws."""

import numpy as np
import pytest

from mscsim._keyed_random import keyed_rows


def _one_by_one(keys, draw):
    rows = next(len(k) for k in keys if not isinstance(k, int))
    return np.stack([draw(np.random.default_rng([k if isinstance(k, int) else int(k[r]) for k in keys]))
                     for r in range(rows)])


@pytest.mark.parametrize("keys", [
    [0, "ids"],                              # population: [seed, patient]
    [20190, "ids", 4241],                    # observation and safety streams
    [2 ** 40 + 7, "ids", 7919, 0, 3],        # cohort: a seed of two words, stream and attempt after the patient
    [1, "ids", 2, 3, 4, 5, 6],               # more words than SeedSequence's pool
    ["ids"],                                 # the key alone
])
def test_keyed_rows_draw_what_default_rng_draws(keys):
    ids = np.random.default_rng(5).integers(0, 2 ** 32, 200)
    ids[:3] = [0, 1, 2 ** 32 - 1]
    cols = [ids if k == "ids" else k for k in keys]
    for draw, width in [(lambda g: g.standard_normal(4), 4), (lambda g: g.random(7), 7)]:
        np.testing.assert_array_equal(keyed_rows(cols, draw, width), _one_by_one(cols, draw))


def test_a_key_beyond_32_bits_falls_back_to_one_generator_per_row():
    ids = np.array([3, 2 ** 33 + 1], dtype=np.int64)
    draw = lambda g: g.random(2)  # noqa: E731
    np.testing.assert_array_equal(keyed_rows([9, ids], draw, 2), _one_by_one([9, ids], draw))


def test_no_rows_and_bad_keys():
    assert keyed_rows([1, np.array([], dtype=np.int64)], lambda g: g.random(3), 3).shape == (0, 3)
    with pytest.raises(ValueError):
        keyed_rows([-1, np.arange(3)], lambda g: g.random(1), 1)
    with pytest.raises(ValueError):
        keyed_rows([np.arange(3), np.arange(4)], lambda g: g.random(1), 1)
