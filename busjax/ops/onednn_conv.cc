// oneDNN's convolution primitives (forward, backward-data, backward-weights)
// as XLA FFI custom calls, for busjax.ops.conv on CPU. Built on first use by
// busjax/ops/onednn.py against the headers of the PyPI wheel
// onednn-devel-cpu-gomp and jaxlib's FFI headers, linked to libdnnl from
// onednn-cpu-gomp.
//
// Every call is the correlation of lax.conv_general_dilated with dimension
// numbers (NHWC, HWIO, NHWC): kernel K x K, the same stride S and dilation D
// on both spatial axes, padding (top, bottom) of H and (left, right) of W:
//   BusjaxConvFwd        (x f32[B,H,W,C],   w f32[K,K,C,O]) -> y  f32[B,Ho,Wo,O]
//   BusjaxConvBwdData    (g f32[B,Ho,Wo,O], w f32[K,K,C,O]) -> dx f32[B,H,W,C]
//   BusjaxConvBwdWeights (x f32[B,H,W,C],   g f32[B,Ho,Wo,O]) -> dw f32[K,K,C,O]
//   BusjaxConvFwdAffineRelu(x, w, scale f32[O], shift f32[O]) -> relu(y * scale + shift)
// with Ho = (H + top + bottom - (K-1)*D - 1) / S + 1 (floor), likewise Wo, and
// the integer attributes "stride", "dilation", "pad_top", "pad_bottom",
// "pad_left", "pad_right". The transposed convolution of stride S is
// BusjaxConvBwdData of the strided one.
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

// kFwdAffineRelu: inference, relu(conv(x, w) * scale + shift) in one oneDNN
// kernel (per-channel binary post-ops and a ReLU), forward_inference.
enum Kind : int { kFwd = 0, kBwdData = 1, kBwdWeights = 2, kFwdAffineRelu = 3 };

struct Primitive {
  std::mutex mu;  // guards the scratchpad and blocked-weights buffers
  dnnl::primitive prim;
  memory::desc src, dst, wei, chan;  // NHWC, NHWC, HWIO, per-channel [1,O,1,1]: XLA buffers
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

// One convolution: batch, input and output sizes and channels, kernel, stride,
// dilation, padding.
struct Geometry {
  long b, h, w, c, ho, wo, o, k, s, d, pt, pb, pl, pr;
  auto Tie() const { return std::make_tuple(b, h, w, c, ho, wo, o, k, s, d, pt, pb, pl, pr); }
};

long OutSize(long in, long lo, long hi, const Geometry& g) {
  return (in + lo + hi - (g.k - 1) * g.d - 1) / g.s + 1;
}

using Key = decltype(std::tuple_cat(std::make_tuple(0), Geometry{}.Tie()));

Primitive* Get(Kind kind, const Geometry& g) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Primitive>> cache;
  std::lock_guard<std::mutex> lock(mu);
  Key key = std::tuple_cat(std::make_tuple(static_cast<int>(kind)), g.Tie());
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();

  const long b = g.b, c = g.c, o = g.o, k = g.k;
  // oneDNN wants the bottom/right padding that the output size uses exactly
  // (no rows past the last window): derive it from Ho, Wo.
  const long ke = (k - 1) * g.d + 1;
  const memory::dims strides{g.s, g.s}, dil{g.d - 1, g.d - 1}, pad_l{g.pt, g.pl},
      pad_r{(g.ho - 1) * g.s + ke - g.h - g.pt, (g.wo - 1) * g.s + ke - g.w - g.pl};
  const auto f32 = memory::data_type::f32;
  memory::desc src({b, c, g.h, g.w}, f32, memory::format_tag::nhwc);
  memory::desc dst({b, o, g.ho, g.wo}, f32, memory::format_tag::nhwc);
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
  } else if (kind == kFwdAffineRelu) {
    p->chan = memory::desc({1, o, 1, 1}, f32, memory::format_tag::nchw);
    dnnl::post_ops ops;
    ops.append_binary(dnnl::algorithm::binary_mul, p->chan);
    ops.append_binary(dnnl::algorithm::binary_add, p->chan);
    ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr fused;
    fused.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    fused.set_post_ops(ops);
    auto pd = dnnl::convolution_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
        wany, dst, strides, dil, pad_l, pad_r, fused);
    p->prim = dnnl::convolution_forward(pd);
    blocked = pd.weights_desc();
    scratch = pd.scratchpad_desc();
    p->impl = pd.impl_info_str();
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

ffi::Error Bad(const std::string& what) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, what);
}

ffi::Error Run(Kind kind, const float* act, const float* other, float* out, const Geometry& g,
               const float* scale = nullptr, const float* shift = nullptr) {
  if (g.s < 1 || g.d < 1 || g.pt < 0 || g.pb < 0 || g.pl < 0 || g.pr < 0)
    return Bad("oneDNN convolution: stride and dilation must be >= 1, padding >= 0");
  if (g.ho != OutSize(g.h, g.pt, g.pb, g) || g.wo != OutSize(g.w, g.pl, g.pr, g))
    return Bad("oneDNN convolution: output size does not follow from input size, kernel, "
               "stride, dilation and padding");
  if (g.b == 0 || g.h == 0 || g.w == 0 || g.c == 0 || g.o == 0) return ffi::Error::Success();
  try {
    Primitive* p = Get(kind, g);
    std::lock_guard<std::mutex> lock(p->mu);
    auto& s = Stream();
    auto& e = Engine();
    if (kind == kBwdWeights) {
      memory x(p->src, e, const_cast<float*>(act)), gd(p->dst, e, const_cast<float*>(other));
      memory dw(p->wei, e, out);
      p->prim.execute(s, {{DNNL_ARG_SRC, x},
                          {DNNL_ARG_DIFF_DST, gd},
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
      } else if (kind == kFwdAffineRelu) {
        memory x(p->src, e, const_cast<float*>(act)), y(p->dst, e, out);
        memory a(p->chan, e, const_cast<float*>(scale)), c(p->chan, e, const_cast<float*>(shift));
        p->prim.execute(s, {{DNNL_ARG_SRC, x},
                            {DNNL_ARG_WEIGHTS, wk},
                            {DNNL_ARG_DST, y},
                            {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, a},
                            {DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, c},
                            {DNNL_ARG_SCRATCHPAD, p->scratch}});
      } else {
        memory gd(p->dst, e, const_cast<float*>(act)), dx(p->src, e, out);
        p->prim.execute(s, {{DNNL_ARG_DIFF_DST, gd},
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

template <typename D>
bool Rank4(const D& d) {
  return d.size() == 4;
}

// x [B,H,W,C], y [B,Ho,Wo,O], w [K,K,C,O] -> Geometry (false if they do not fit together).
struct Attrs {
  int64_t s, d, pt, pb, pl, pr;
};

template <typename DX, typename DY, typename DW>
bool Shapes(const DX& x, const DY& y, const DW& w, const Attrs& a, Geometry* g) {
  if (!Rank4(x) || !Rank4(y) || !Rank4(w) || x[0] != y[0] || w[0] != w[1] || w[2] != x[3] ||
      w[3] != y[3])
    return false;
  *g = Geometry{x[0], x[1], x[2], x[3], y[1], y[2], y[3], w[0], a.s, a.d, a.pt, a.pb, a.pl, a.pr};
  return true;
}

#define BUSJAX_ATTR_ARGS                                                                 \
  int64_t stride, int64_t dilation, int64_t pad_top, int64_t pad_bottom, int64_t pad_left, \
      int64_t pad_right
#define BUSJAX_ATTRS Attrs{stride, dilation, pad_top, pad_bottom, pad_left, pad_right}

ffi::Error ConvFwd(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y,
                   BUSJAX_ATTR_ARGS) {
  Geometry g;
  if (!Shapes(x.dimensions(), y->dimensions(), w.dimensions(), BUSJAX_ATTRS, &g))
    return Bad("BusjaxConvFwd: expected x [B,H,W,C], w [K,K,C,O], y [B,Ho,Wo,O]");
  return Run(kFwd, x.typed_data(), w.typed_data(), y->typed_data(), g);
}

ffi::Error ConvFwdAffineRelu(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                             ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> shift,
                             ffi::ResultBuffer<ffi::F32> y, BUSJAX_ATTR_ARGS) {
  Geometry g;
  auto ad = scale.dimensions(), cd = shift.dimensions();
  if (!Shapes(x.dimensions(), y->dimensions(), w.dimensions(), BUSJAX_ATTRS, &g) ||
      ad.size() != 1 || ad[0] != g.o || cd.size() != 1 || cd[0] != g.o)
    return Bad("BusjaxConvFwdAffineRelu: expected x [B,H,W,C], w [K,K,C,O], scale [O], "
               "shift [O], y [B,Ho,Wo,O]");
  return Run(kFwdAffineRelu, x.typed_data(), w.typed_data(), y->typed_data(), g,
             scale.typed_data(), shift.typed_data());
}

ffi::Error ConvBwdData(ffi::Buffer<ffi::F32> gy, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> dx, BUSJAX_ATTR_ARGS) {
  Geometry g;
  if (!Shapes(dx->dimensions(), gy.dimensions(), w.dimensions(), BUSJAX_ATTRS, &g))
    return Bad("BusjaxConvBwdData: expected g [B,Ho,Wo,O], w [K,K,C,O], dx [B,H,W,C]");
  return Run(kBwdData, gy.typed_data(), w.typed_data(), dx->typed_data(), g);
}

ffi::Error ConvBwdWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> gy,
                          ffi::ResultBuffer<ffi::F32> dw, BUSJAX_ATTR_ARGS) {
  Geometry g;
  if (!Shapes(x.dimensions(), gy.dimensions(), dw->dimensions(), BUSJAX_ATTRS, &g))
    return Bad("BusjaxConvBwdWeights: expected x [B,H,W,C], g [B,Ho,Wo,O], dw [K,K,C,O]");
  return Run(kBwdWeights, x.typed_data(), gy.typed_data(), dw->typed_data(), g);
}

}  // namespace

#define BUSJAX_CONV_BINDING                  \
  ffi::Ffi::Bind()                           \
      .Arg<ffi::Buffer<ffi::F32>>()          \
      .Arg<ffi::Buffer<ffi::F32>>()          \
      .Ret<ffi::Buffer<ffi::F32>>()          \
      .Attr<int64_t>("stride")               \
      .Attr<int64_t>("dilation")             \
      .Attr<int64_t>("pad_top")              \
      .Attr<int64_t>("pad_bottom")           \
      .Attr<int64_t>("pad_left")             \
      .Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(BusjaxConvFwd, ConvFwd, BUSJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(BusjaxConvFwdAffineRelu, ConvFwdAffineRelu,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_bottom")
                                  .Attr<int64_t>("pad_left")
                                  .Attr<int64_t>("pad_right"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(BusjaxConvBwdData, ConvBwdData, BUSJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(BusjaxConvBwdWeights, ConvBwdWeights, BUSJAX_CONV_BINDING);

// The implementation oneDNN chose for a pass (0 fwd, 1 bwd-data, 2
// bwd-weights, 3 fwd with per-channel scale, shift and ReLU) and geometry, e.g. "brg:avx512_core" or "jit:avx512_core";
// "error: ..." when oneDNN has none.
extern "C" const char* BusjaxConvImpl(int kind, long b, long h, long w, long c, long ho, long wo,
                                      long o, long k, long s, long d, long pt, long pb, long pl,
                                      long pr) {
  static thread_local std::string err;
  try {
    return Get(static_cast<Kind>(kind), Geometry{b, h, w, c, ho, wo, o, k, s, d, pt, pb, pl, pr})
        ->impl.c_str();
  } catch (const std::exception& ex) {
    err = std::string("error: ") + ex.what();
    return err.c_str();
  }
}
