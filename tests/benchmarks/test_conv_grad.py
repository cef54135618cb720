"""benchmarks.conv_grad: every weight-gradient formulation computes XLA's."""
import jax
import numpy as np
import pytest

from benchmarks import conv_grad
from busjax.ops import onednn


@pytest.mark.parametrize("name", sorted(conv_grad.FORMULATIONS))
def test_formulation_equals_autodiff_weight_gradient(name):
  kx, kg = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (2, 6, 5, 3))     # odd width: the flat grid's row offsets
  g = jax.random.normal(kg, (2, 6, 5, 4))
  want = np.asarray(jax.jit(conv_grad.dw_xla)(x, g))
  got = np.asarray(jax.jit(conv_grad.FORMULATIONS[name])(x, g))
  assert got.shape == (3, 3, 3, 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_measure_row_and_table():
  row = conv_grad.measure((1, 4, 4, 2, 2), steps=1, with_torch=False)
  assert row["kind"] == "conv_grad" and row["shape"] == "1x4x4x2x2"
  assert row["gflop_per_pass"] == pytest.approx(2 * 16 * 4 * 9 / 1e9)
  for k in ("fwd_ms", "dx_ms", "dw_ms", "dw_flat_ms"):
    assert row[k] > 0
  assert max(row[f"{n}_rel_err"] for n in conv_grad.FORMULATIONS) < 1e-5
  ok, _ = onednn.available()
  assert row["onednn"].startswith("skipped") != ok
  for name in ("fwd_onednn", "dx_onednn", "dw_onednn"):
    assert (row[f"{name}_rel_err"] < 1e-4) if ok else row[f"{name}_ms"] is None
  assert row["torch_fwd_dw_ms"] is None
  md = conv_grad.table([row])
  assert "| 1x4x4x2x2 |" in md and md.splitlines()[2].endswith("| - |")


def test_parse_shape_rejects_bad_input():
  assert conv_grad.parse_shape("4x128x128x64x64") == (4, 128, 128, 64, 64)
  for bad in ("4x128x128x64", "4x128x128x64x0", "a x b"):
    with pytest.raises(ValueError, match="BxHxWxCxO"):
      conv_grad.parse_shape(bad)
