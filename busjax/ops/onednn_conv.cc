// oneDNN's convolution primitives (forward, backward-data, backward-weights)
// as XLA FFI custom calls, for busjax.ops.conv on CPU. Built on first use by
// busjax/ops/onednn.py against the headers of the PyPI wheel
// onednn-devel-cpu-gomp and jaxlib's FFI headers, linked to libdnnl from
// onednn-cpu-gomp.
//
// Every call is the stride-1 "SAME" correlation of lax.conv_general_dilated
// with dimension numbers (NHWC, HWIO, NHWC), kernel K x K, dilation D
// (padding (K-1)*D split as lax does: half, rounded down, before):
//   BusjaxConvFwd        (x f32[B,H,W,C], w f32[K,K,C,O]) -> y  f32[B,H,W,O]
//   BusjaxConvBwdData    (g f32[B,H,W,O], w f32[K,K,C,O]) -> dx f32[B,H,W,C]
//   BusjaxConvBwdWeights (x f32[B,H,W,C], g f32[B,H,W,O]) -> dw f32[K,K,C,O]
// each with the integer attribute "dilation".
//
// Activations stay NHWC (no copies); weights are reordered between HWIO and
// the blocked layout oneDNN picks for its JIT kernels on every call (small).
// Fixing the weights to HWIO instead makes oneDNN fall back to a GEMM kernel
// ~5x slower (measured for the weight gradient).
#include <cstdint>
#include <exception>
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

enum Kind : int { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

struct Primitive {
  std::mutex mu;  // guards the scratchpad and blocked-weights buffers
  dnnl::primitive prim;
  memory::desc src, dst, wei;  // NHWC, NHWC, HWIO: the XLA buffers
  memory scratch, blocked;     // oneDNN's scratchpad and weights layout
  bool reorder_weights = false;
  dnnl::reorder reorder;  // HWIO -> blocked (fwd, bwd-data) or back (bwd-weights)
  std::string impl;
};

dnnl::engine& Engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& Stream() {
  thread_local dnnl::stream s(Engine());
  return s;
}

using Key = std::tuple<int, long, long, long, long, long, long, long>;

Primitive* Get(Kind kind, long b, long h, long w, long c, long o, long k, long d) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Primitive>> cache;
  std::lock_guard<std::mutex> lock(mu);
  Key key{kind, b, h, w, c, o, k, d};
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();

  const long total = (k - 1) * d, lo = total / 2, hi = total - lo;
  const memory::dims strides{1, 1}, dil{d - 1, d - 1}, pad_l{lo, lo}, pad_r{hi, hi};
  const auto f32 = memory::data_type::f32;
  memory::desc src({b, c, h, w}, f32, memory::format_tag::nhwc);
  memory::desc dst({b, o, h, w}, f32, memory::format_tag::nhwc);
  memory::desc wei({o, c, k, k}, f32, memory::format_tag::hwio);
  memory::desc wany({o, c, k, k}, f32, memory::format_tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto fwd = dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, wany,
      dst, strides, dil, pad_l, pad_r, attr);

  auto p = std::make_unique<Primitive>();
  p->src = src;
  p->dst = dst;
  p->wei = wei;
  memory::desc blocked, scratch;
  if (kind == kFwd) {
    p->prim = dnnl::convolution_forward(fwd);
    blocked = fwd.weights_desc();
    scratch = fwd.scratchpad_desc();
    p->impl = fwd.impl_info_str();
  } else if (kind == kBwdData) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, src, wany, dst, strides, dil, pad_l, pad_r,
        fwd, attr);
    p->prim = dnnl::convolution_backward_data(pd);
    blocked = pd.weights_desc();
    scratch = pd.scratchpad_desc();
    p->impl = pd.impl_info_str();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, src, wany, dst, strides, dil, pad_l, pad_r,
        fwd, attr);
    p->prim = dnnl::convolution_backward_weights(pd);
    blocked = pd.diff_weights_desc();
    scratch = pd.scratchpad_desc();
    p->impl = pd.impl_info_str();
  }
  p->scratch = memory(scratch, Engine());
  p->reorder_weights = !(blocked == wei);
  if (p->reorder_weights) {
    p->blocked = memory(blocked, Engine());
    p->reorder = kind == kBwdWeights
                     ? dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), blocked, Engine(), wei))
                     : dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), wei, Engine(), blocked));
  }
  Primitive* raw = p.get();
  cache.emplace(key, std::move(p));
  return raw;
}

ffi::Error Run(Kind kind, const float* act, const float* other, float* out, long b, long h, long w,
               long c, long o, long k, long d) {
  if (d < 1) return ffi::Error(ffi::ErrorCode::kInvalidArgument, "dilation must be >= 1");
  if (b == 0 || h == 0 || w == 0 || c == 0 || o == 0) return ffi::Error::Success();
  try {
    Primitive* p = Get(kind, b, h, w, c, o, k, d);
    std::lock_guard<std::mutex> lock(p->mu);
    auto& s = Stream();
    auto& e = Engine();
    if (kind == kBwdWeights) {
      memory x(p->src, e, const_cast<float*>(act)), g(p->dst, e, const_cast<float*>(other));
      memory dw(p->wei, e, out);
      p->prim.execute(s, {{DNNL_ARG_SRC, x},
                          {DNNL_ARG_DIFF_DST, g},
                          {DNNL_ARG_DIFF_WEIGHTS, p->reorder_weights ? p->blocked : dw},
                          {DNNL_ARG_SCRATCHPAD, p->scratch}});
      if (p->reorder_weights) p->reorder.execute(s, p->blocked, dw);
    } else {
      memory wu(p->wei, e, const_cast<float*>(other));
      if (p->reorder_weights) p->reorder.execute(s, wu, p->blocked);
      const memory& wk = p->reorder_weights ? p->blocked : wu;
      if (kind == kFwd) {
        memory x(p->src, e, const_cast<float*>(act)), y(p->dst, e, out);
        p->prim.execute(s, {{DNNL_ARG_SRC, x},
                            {DNNL_ARG_WEIGHTS, wk},
                            {DNNL_ARG_DST, y},
                            {DNNL_ARG_SCRATCHPAD, p->scratch}});
      } else {
        memory g(p->dst, e, const_cast<float*>(act)), dx(p->src, e, out);
        p->prim.execute(s, {{DNNL_ARG_DIFF_DST, g},
                            {DNNL_ARG_WEIGHTS, wk},
                            {DNNL_ARG_DIFF_SRC, dx},
                            {DNNL_ARG_SCRATCHPAD, p->scratch}});
      }
    }
    s.wait();
  } catch (const std::exception& ex) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution: ") + ex.what());
  }
  return ffi::Error::Success();
}

ffi::Error Bad(const char* what) { return ffi::Error(ffi::ErrorCode::kInvalidArgument, what); }

ffi::Error ConvFwd(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y,
                   int64_t dilation) {
  auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 4 || wd.size() != 4 || yd.size() != 4 || wd[0] != wd[1] || wd[2] != xd[3] ||
      yd[0] != xd[0] || yd[1] != xd[1] || yd[2] != xd[2] || yd[3] != wd[3])
    return Bad("BusjaxConvFwd: expected x [B,H,W,C], w [K,K,C,O], y [B,H,W,O]");
  return Run(kFwd, x.typed_data(), w.typed_data(), y->typed_data(), xd[0], xd[1], xd[2], xd[3],
             wd[3], wd[0], dilation);
}

ffi::Error ConvBwdData(ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> dx, int64_t dilation) {
  auto gd = g.dimensions(), wd = w.dimensions(), xd = dx->dimensions();
  if (gd.size() != 4 || wd.size() != 4 || xd.size() != 4 || wd[0] != wd[1] || wd[3] != gd[3] ||
      xd[0] != gd[0] || xd[1] != gd[1] || xd[2] != gd[2] || xd[3] != wd[2])
    return Bad("BusjaxConvBwdData: expected g [B,H,W,O], w [K,K,C,O], dx [B,H,W,C]");
  return Run(kBwdData, g.typed_data(), w.typed_data(), dx->typed_data(), xd[0], xd[1], xd[2],
             xd[3], wd[3], wd[0], dilation);
}

ffi::Error ConvBwdWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                          ffi::ResultBuffer<ffi::F32> dw, int64_t dilation) {
  auto xd = x.dimensions(), gd = g.dimensions(), wd = dw->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || wd.size() != 4 || xd[0] != gd[0] || xd[1] != gd[1] ||
      xd[2] != gd[2] || wd[0] != wd[1] || wd[2] != xd[3] || wd[3] != gd[3])
    return Bad("BusjaxConvBwdWeights: expected x [B,H,W,C], g [B,H,W,O], dw [K,K,C,O]");
  return Run(kBwdWeights, x.typed_data(), g.typed_data(), dw->typed_data(), xd[0], xd[1], xd[2],
             xd[3], gd[3], wd[0], dilation);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BusjaxConvFwd, ConvFwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("dilation"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(BusjaxConvBwdData, ConvBwdData,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("dilation"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(BusjaxConvBwdWeights, ConvBwdWeights,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("dilation"));

// The implementation oneDNN chose for a pass (0 fwd, 1 bwd-data, 2
// bwd-weights) and shape, e.g. "brg:avx512_core" or "jit:avx512_core"; ""
// with the error in `error` when oneDNN has none.
extern "C" const char* BusjaxConvImpl(int kind, long b, long h, long w, long c, long o, long k,
                                      long d) {
  static thread_local std::string err;
  try {
    return Get(static_cast<Kind>(kind), b, h, w, c, o, k, d)->impl.c_str();
  } catch (const std::exception& ex) {
    err = std::string("error: ") + ex.what();
    return err.c_str();
  }
}
