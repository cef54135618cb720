"""benchmarks.common: the machine fields of every results row."""
from benchmarks import common


def test_malloc_library_names_a_preloaded_allocator():
  assert common.malloc_library("") == "default"
  assert common.malloc_library("/usr/lib/libfoo.so") == "default"
  assert common.malloc_library("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4") == \
      "libtcmalloc_minimal.so.4"
  assert common.malloc_library("/opt/a.so:/usr/lib/libjemalloc.so.2") == "libjemalloc.so.2"


def test_environment_has_host_fields(monkeypatch):
  monkeypatch.setenv("LD_PRELOAD", "/x/libmimalloc.so")
  env = common.environment()
  assert env["malloc"] == "libmimalloc.so"
  assert isinstance(env["host_cpu"], str) and env["host_cpu"]
  assert env["host_cores"] >= 1


def test_peak_tflops_by_device_kind_and_dtype():
  assert common.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
  assert common.peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
  assert common.peak_tflops("NVIDIA H200", "float32") == 494.7
  assert common.peak_tflops("TPU v4", "bfloat16") == 275.0
  assert common.peak_tflops("TPU v4", "float32") is None
  assert common.peak_tflops("cpu", "float32") is None
  assert common.achieved_tflops(2.0, 500.0, train=True) == 3.0
  assert common.achieved_tflops(2.0, 500.0, train=False) == 1.0
  assert common.achieved_tflops(None, 500.0, train=True) is None
