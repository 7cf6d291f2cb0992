"""Per-patient draws use exp/log evaluated in place, so their last bit does not depend on the heap's layout."""

import numpy as np

from mscsim import _ufuncs as uf


def test_transcendentals_do_not_depend_on_where_the_arrays_lie():
    rng = np.random.default_rng(7)
    x = rng.normal(size=4099) * 3.0
    buf = np.empty(x.size + 1)
    shifted = buf[1:]  # an input 8 bytes from the buffer NumPy might place an output in
    shifted[:] = x
    for f, arg in ((uf.exp, x), (uf.log, np.abs(x) + 1e-3), (uf.log1p, np.abs(x)), (uf.expm1, x)):
        shifted[:] = arg
        a, b = f(arg), f(shifted)
        assert a.dtype == np.float64 and a.shape == arg.shape
        assert np.array_equal(a, b)
        np.testing.assert_allclose(a, getattr(np, f.__name__)(arg), rtol=1e-15)  # the same function, to the last bit or two
    assert float(uf.exp(0.0)) == 1.0  # scalars work too (0-d arrays)
