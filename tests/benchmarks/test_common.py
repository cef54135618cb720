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
