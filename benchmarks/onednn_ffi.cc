// oneDNN's convolution backward-weights primitive as an XLA FFI custom call
// (issue 7 probe; see benchmarks/onednn_ffi.py). Built on demand by that
// module against the headers of the PyPI wheels onednn-devel-cpu-gomp and
// jaxlib, linked to libdnnl from onednn-cpu-gomp.
//
// BusjaxConvBwdWeights(x f32[B,H,W,C], g f32[B,H,W,O]) -> dw f32[K,K,C,O]:
// the weight gradient of the stride-1 "SAME" correlation y = conv(x, w)
// (NHWC, HWIO; lax's padding split (K-1)//2 before, the rest after).
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

struct Primitive {
  std::mutex mu;  // guards the scratchpad and blocked-weights buffers
  dnnl::convolution_backward_weights bwd;
  memory::desc src, dst, wei;
  memory scratch, blocked;
  dnnl::reorder to_hwio;
  std::string impl;
};

dnnl::engine& Engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

using Key = std::tuple<long, long, long, long, long, long>;

Primitive* Get(long b, long h, long w, long c, long o, long k) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Primitive>> cache;
  std::lock_guard<std::mutex> lock(mu);
  Key key{b, h, w, c, o, k};
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();
  const long lo = (k - 1) / 2, hi = k - 1 - lo;
  const auto f32 = memory::data_type::f32;
  memory::desc src({b, c, h, w}, f32, memory::format_tag::nhwc);
  memory::desc dst({b, o, h, w}, f32, memory::format_tag::nhwc);
  memory::desc wei({o, c, k, k}, f32, memory::format_tag::hwio);
  // "any" weights let oneDNN pick its blocked layout (the AVX-512/AVX2 JIT
  // kernels); with HWIO fixed it falls back to a GEMM kernel ~5x slower.
  memory::desc wany({o, c, k, k}, f32, memory::format_tag::any);
  auto fwd = dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
      wany, dst, {1, 1}, {lo, lo}, {hi, hi});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto pd = dnnl::convolution_backward_weights::primitive_desc(
      Engine(), dnnl::algorithm::convolution_direct, src, wany, dst, {1, 1}, {lo, lo},
      {hi, hi}, fwd, attr);
  auto p = std::make_unique<Primitive>();
  p->bwd = dnnl::convolution_backward_weights(pd);
  p->src = src;
  p->dst = dst;
  p->wei = wei;
  p->scratch = memory(pd.scratchpad_desc(), Engine());
  p->blocked = memory(pd.diff_weights_desc(), Engine());
  p->to_hwio = dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), pd.diff_weights_desc(),
                                                           Engine(), wei));
  p->impl = pd.impl_info_str();
  Primitive* raw = p.get();
  cache.emplace(key, std::move(p));
  return raw;
}

ffi::Error ConvBwdWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                          ffi::ResultBuffer<ffi::F32> dw) {
  auto xd = x.dimensions(), gd = g.dimensions(), wd = dw->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || wd.size() != 4 || xd[0] != gd[0] ||
      xd[1] != gd[1] || xd[2] != gd[2] || wd[0] != wd[1] || wd[2] != xd[3] || wd[3] != gd[3]) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "BusjaxConvBwdWeights: expected x [B,H,W,C], g [B,H,W,O], dw [K,K,C,O]");
  }
  Primitive* p = Get(xd[0], xd[1], xd[2], xd[3], gd[3], wd[0]);
  std::lock_guard<std::mutex> lock(p->mu);
  dnnl::stream s(Engine());
  memory ms(p->src, Engine(), const_cast<float*>(x.typed_data()));
  memory md(p->dst, Engine(), const_cast<float*>(g.typed_data()));
  memory mw(p->wei, Engine(), dw->typed_data());
  p->bwd.execute(s, {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DIFF_DST, md},
                     {DNNL_ARG_DIFF_WEIGHTS, p->blocked}, {DNNL_ARG_SCRATCHPAD, p->scratch}});
  p->to_hwio.execute(s, p->blocked, mw);
  s.wait();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BusjaxConvBwdWeights, ConvBwdWeights,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// Implementation name oneDNN chose for a shape (e.g. "jit:avx512_core").
extern "C" const char* BusjaxConvBwdWeightsImpl(long b, long h, long w, long c, long o, long k) {
  return Get(b, h, w, c, o, k)->impl.c_str();
}
