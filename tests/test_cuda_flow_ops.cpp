// Differential tests of CudaFlowOps against the CPU reference CpuFlowOps<float>, in the style of
// ggml's test-backend-ops: each op is described once (its arguments and a lambda that calls it),
// run on fresh random inputs on both backends, and compared by normalised error with a per-op
// tolerance. Every buffer sits between sentinel regions, and the gaps of strided matrices
// (ld > width) hold sentinels too, so any out-of-bounds write or stray read shows up. Skips
// entirely when no CUDA device is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/device.h"
#include "cuda_diff.h"
#include "kernels/flow_ops_cpu.h"
#ifdef MIRAD_HAVE_CUDA
#include "kernels/flow_ops_cuda.h"
#endif

namespace mirad {
namespace {

// ---------------------------------------------------------------------------------------------
// Argument descriptions.

enum class Kind { f32, i32, u8 };
enum class Role { in, out, inout };
enum class Fill {
  normal,     // mean + scale * N(0,1)
  uniform,    // uniform in [lo, hi]
  nan,        // quiet NaN: an output the op must overwrite (a skipped element stays NaN)
  perm,       // i32: the first `cols` entries of a random permutation of [0, range)
  nonfinite,  // f32: normal, with a NaN or +-Inf planted in about a third of the rows
  flag_junk,  // u8: 0xCC, neither 0 nor 1, so an unwritten flag is caught
};

struct ArgSpec {
  std::string name;
  Kind kind = Kind::f32;
  Role role = Role::in;
  int64_t rows = 0, cols = 0, ld = 0;  // row-major; the gaps ld - cols hold sentinels
  Fill fill = Fill::normal;
  double a = 0, b = 1;  // normal: mean, scale; uniform: lo, hi
  int64_t range = 0;    // perm: the permuted range
};

ArgSpec in(std::string name, int64_t rows, int64_t cols, int64_t ld = -1, double mean = 0,
           double scale = 1) {
  return {std::move(name),    Kind::f32,    Role::in, rows, cols,
          ld < 0 ? cols : ld, Fill::normal, mean,     scale};
}
ArgSpec in_uniform(std::string name, int64_t rows, int64_t cols, double lo, double hi,
                   int64_t ld = -1) {
  return {std::move(name),    Kind::f32,     Role::in, rows, cols,
          ld < 0 ? cols : ld, Fill::uniform, lo,       hi};
}
ArgSpec out(std::string name, int64_t rows, int64_t cols, int64_t ld = -1) {
  return {std::move(name), Kind::f32, Role::out, rows, cols, ld < 0 ? cols : ld, Fill::nan};
}
ArgSpec inout(std::string name, int64_t rows, int64_t cols, int64_t ld = -1, double mean = 0,
              double scale = 1) {
  return {std::move(name),    Kind::f32,    Role::inout, rows, cols,
          ld < 0 ? cols : ld, Fill::normal, mean,        scale};
}

size_t elem_size(Kind k) {
  return k == Kind::f32 || k == Kind::i32 ? 4 : 1;
}

// Pointers to the bodies of the named arguments, handed to an op's lambda.
class Args {
 public:
  void set(const std::string& name, void* p) { m_ptrs[name] = p; }
  float* f(const std::string& name) const { return static_cast<float*>(get(name)); }
  int32_t* i(const std::string& name) const { return static_cast<int32_t*>(get(name)); }
  uint8_t* u(const std::string& name) const { return static_cast<uint8_t*>(get(name)); }

 private:
  void* get(const std::string& name) const {
    auto it = m_ptrs.find(name);
    if (it == m_ptrs.end()) throw std::runtime_error("test bug: no argument named " + name);
    return it->second;
  }
  std::map<std::string, void*> m_ptrs;
};

// One op on one set of sizes: described once, runnable on either backend.
struct OpCase {
  std::string name;
  std::vector<ArgSpec> args;
  double tol = 1e-5;
  std::function<void(const CpuFlowOps<float>&, const Args&)> run_cpu;
#ifdef MIRAD_HAVE_CUDA
  std::function<void(const CudaFlowOps&, const Args&)> run_cuda;
#endif
};
void PrintTo(const OpCase& c, std::ostream* os) {
  *os << c.name;
}

// The generic lambda is instantiated once per backend, so both run the very same call.
template <class F>
OpCase make_case(std::string name, std::vector<ArgSpec> args, double tol, F call) {
  OpCase c;
  c.name = std::move(name);
  c.args = std::move(args);
  c.tol = tol;
  c.run_cpu = [call](const CpuFlowOps<float>& ops, const Args& a) { call(ops, a); };
#ifdef MIRAD_HAVE_CUDA
  c.run_cuda = [call](const CudaFlowOps& ops, const Args& a) { call(ops, a); };
#endif
  return c;
}

// ---------------------------------------------------------------------------------------------
// The ops. Tolerances: element-wise math differs only by libm vs CUDA ulps; reductions and
// GEMMs also differ in summation order.

constexpr double kTolElem = 1e-5;
constexpr double kTolReduce = 1e-4;
constexpr float kClamp = 1.9f;
constexpr int64_t kLdPadA = 3, kLdPadB = 5, kLdPadC = 7;  // odd ld paddings

std::string size_tag(int64_t N, int64_t W) {
  return "N" + std::to_string(N) + "_W" + std::to_string(W);
}
float inv_count(int64_t N) {
  return N > 0 ? 1.f / static_cast<float>(N) : 1.f;
}

OpCase gather_cols_case(int64_t N, int64_t W, int64_t n_out) {
  ArgSpec idx{"idx", Kind::i32, Role::in, 1, n_out, n_out, Fill::perm};
  idx.range = W;
  const int64_t lds = W + kLdPadA, ldd = n_out + kLdPadB;
  return make_case("gather_cols_" + size_tag(N, W) + "_out" + std::to_string(n_out),
                   {idx, in("src", N, W, lds), out("dst", N, n_out, ldd)}, kTolElem,
                   [=](const auto& ops, const Args& a) {
                     ops.gather_cols(N, n_out, a.i("idx"), a.f("src"), lds, a.f("dst"), ldd);
                   });
}

OpCase broadcast_rows_case(int64_t N, int64_t W) {
  const int64_t ldd = W + kLdPadB;
  return make_case(
      "broadcast_rows_" + size_tag(N, W), {in("b", 1, W), out("dst", N, W, ldd)}, kTolElem,
      [=](const auto& ops, const Args& a) { ops.broadcast_rows(N, W, a.f("b"), a.f("dst"), ldd); });
}

OpCase relu_case(int64_t N, int64_t W) {
  return make_case("relu_" + size_tag(N, W), {in("a", N, W), out("r", N, W)}, kTolElem,
                   [=](const auto& ops, const Args& a) { ops.relu(N * W, a.f("a"), a.f("r")); });
}

OpCase relu_mask_case(int64_t N, int64_t W) {
  return make_case("relu_mask_" + size_tag(N, W), {in("a", N, W), in("in", N, W), out("out", N, W)},
                   kTolElem, [=](const auto& ops, const Args& a) {
                     ops.relu_mask(N * W, a.f("a"), a.f("in"), a.f("out"));
                   });
}

// The flow masks gradients in place (out == in); that aliasing must work too.
OpCase relu_mask_inplace_case(int64_t N, int64_t W) {
  return make_case(
      "relu_mask_inplace_" + size_tag(N, W), {in("a", N, W), inout("g", N, W)}, kTolElem,
      [=](const auto& ops, const Args& a) { ops.relu_mask(N * W, a.f("a"), a.f("g"), a.f("g")); });
}

OpCase col_sum_case(int64_t N, int64_t W, float beta) {
  const int64_t lds = W + kLdPadA;
  // beta == 0 must ignore the old contents, so they start as NaN.
  ArgSpec dst = beta == 0.f ? out("dst", 1, W) : inout("dst", 1, W);
  return make_case("col_sum_" + size_tag(N, W) + (beta == 0.f ? "_beta0" : "_beta"),
                   {in("src", N, W, lds, 0.3, 1.0), dst}, kTolReduce,
                   [=](const auto& ops, const Args& a) {
                     ops.col_sum(N, W, a.f("src"), lds, beta, a.f("dst"));
                   });
}

// o = [u | t]; u is spread wide enough that the soft clamp saturates for some elements.
OpCase coupling_forward_case(int64_t N, int64_t d2) {
  const int64_t ldx = d2 + kLdPadA, ldy = d2 + kLdPadB;
  return make_case("coupling_forward_" + size_tag(N, d2),
                   {in("o", N, 2 * d2, -1, 0, 2.5), in("x2", N, d2, ldx), out("y2", N, d2, ldy),
                    out("s", N, d2), inout("log_det", 1, N)},
                   kTolReduce, [=](const auto& ops, const Args& a) {
                     ops.coupling_forward(N, d2, kClamp, a.f("o"), a.f("x2"), ldx, a.f("y2"), ldy,
                                          a.f("s"), a.f("log_det"));
                   });
}

OpCase coupling_inverse_case(int64_t N, int64_t d2) {
  const int64_t ldy = d2 + kLdPadA, ldx = d2 + kLdPadB;
  return make_case("coupling_inverse_" + size_tag(N, d2),
                   {in("o", N, 2 * d2, -1, 0, 2.5), in("y2", N, d2, ldy), out("x2", N, d2, ldx)},
                   kTolElem, [=](const auto& ops, const Args& a) {
                     ops.coupling_inverse(N, d2, kClamp, a.f("o"), a.f("y2"), ldy, a.f("x2"), ldx);
                   });
}

// s is a clamp output, so it lies inside (-clamp, clamp).
OpCase coupling_backward_case(int64_t N, int64_t d2) {
  const int64_t ldx = d2 + kLdPadA, ldg = d2 + kLdPadB;
  const float inv_n = inv_count(N);
  return make_case("coupling_backward_" + size_tag(N, d2),
                   {in("x2", N, d2, ldx), in_uniform("s", N, d2, -1.8, 1.8),
                    inout("g2", N, d2, ldg), out("g_o", N, 2 * d2)},
                   kTolElem, [=](const auto& ops, const Args& a) {
                     ops.coupling_backward(N, d2, kClamp, inv_n, a.f("x2"), ldx, a.f("s"),
                                           a.f("g2"), ldg, a.f("g_o"));
                   });
}

OpCase coupling_tangent_case(int64_t N, int64_t d2) {
  const int64_t ldx = d2 + kLdPadA, ldxd = d2 + kLdPadB, ldyd = d2 + kLdPadC;
  return make_case(
      "coupling_tangent_" + size_tag(N, d2),
      {in("x2", N, d2, ldx), in_uniform("s", N, d2, -1.8, 1.8), in("x2_dot", N, d2, ldxd),
       in("o_dot", N, 2 * d2), out("y2_dot", N, d2, ldyd), out("s_dot", N, d2)},
      kTolElem, [=](const auto& ops, const Args& a) {
        ops.coupling_tangent(N, d2, kClamp, a.f("x2"), ldx, a.f("s"), a.f("x2_dot"), ldxd,
                             a.f("o_dot"), a.f("y2_dot"), ldyd, a.f("s_dot"));
      });
}

OpCase coupling_backward_hvp_case(int64_t N, int64_t d2) {
  const int64_t ldx = d2 + kLdPadA, ldxd = d2 + kLdPadB, ldg = d2 + kLdPadC;
  const float inv_n = inv_count(N);
  return make_case("coupling_backward_hvp_" + size_tag(N, d2),
                   {in("x2", N, d2, ldx), in_uniform("s", N, d2, -1.8, 1.8),
                    in("x2_dot", N, d2, ldxd), in("s_dot", N, d2), inout("g2", N, d2, ldg),
                    inout("g2_dot", N, d2, ldg), out("g_o", N, 2 * d2), out("g_o_dot", N, 2 * d2)},
                   kTolElem, [=](const auto& ops, const Args& a) {
                     ops.coupling_backward_hvp(N, d2, kClamp, inv_n, a.f("x2"), ldx, a.f("s"),
                                               a.f("x2_dot"), ldxd, a.f("s_dot"), a.f("g2"),
                                               a.f("g2_dot"), ldg, a.f("g_o"), a.f("g_o_dot"));
                   });
}

OpCase actnorm_forward_case(int64_t N, int64_t D) {
  return make_case("actnorm_forward_" + size_tag(N, D),
                   {in("ls", 1, D, -1, 0, 0.5), in("b", 1, D), in("y", N, D), out("z", N, D)},
                   kTolElem, [=](const auto& ops, const Args& a) {
                     ops.actnorm_forward(N, D, a.f("ls"), a.f("b"), a.f("y"), a.f("z"));
                   });
}

OpCase actnorm_inverse_case(int64_t N, int64_t D) {
  return make_case("actnorm_inverse_" + size_tag(N, D),
                   {in("ls", 1, D, -1, 0, 0.5), in("b", 1, D), in("z", N, D), out("y", N, D)},
                   kTolElem, [=](const auto& ops, const Args& a) {
                     ops.actnorm_inverse(N, D, a.f("ls"), a.f("b"), a.f("z"), a.f("y"));
                   });
}

OpCase nll_rows_case(int64_t N, int64_t D) {
  return make_case(
      "nll_rows_" + size_tag(N, D),
      {in("z", N, D), in("log_det", 1, N, -1, 0, 5), in("ls", 1, D, -1, 0, 0.5), out("nll", 1, N)},
      kTolReduce, [=](const auto& ops, const Args& a) {
        ops.nll_rows(N, D, a.f("z"), a.f("log_det"), a.f("ls"), a.f("nll"));
      });
}

// z is off-centre so the column sums are not all near zero.
OpCase actnorm_backward_case(int64_t N, int64_t D) {
  const float inv_n = inv_count(N);
  return make_case("actnorm_backward_" + size_tag(N, D),
                   {in("ls", 1, D, -1, 0, 0.5), in("b", 1, D), in("z", N, D, -1, 0.4, 1.3),
                    out("g_y", N, D), out("g_ls", 1, D), out("g_b", 1, D)},
                   kTolReduce, [=](const auto& ops, const Args& a) {
                     ops.actnorm_backward(N, D, inv_n, a.f("ls"), a.f("b"), a.f("z"), a.f("g_y"),
                                          a.f("g_ls"), a.f("g_b"));
                   });
}

OpCase actnorm_tangent_case(int64_t N, int64_t D) {
  return make_case("actnorm_tangent_" + size_tag(N, D),
                   {in("ls", 1, D, -1, 0, 0.5), in("ls_dot", 1, D), in("b_dot", 1, D),
                    in("y", N, D), in("y_dot", N, D), out("z_dot", N, D)},
                   kTolElem, [=](const auto& ops, const Args& a) {
                     ops.actnorm_tangent(N, D, a.f("ls"), a.f("ls_dot"), a.f("b_dot"), a.f("y"),
                                         a.f("y_dot"), a.f("z_dot"));
                   });
}

OpCase actnorm_backward_hvp_case(int64_t N, int64_t D) {
  const float inv_n = inv_count(N);
  return make_case("actnorm_backward_hvp_" + size_tag(N, D),
                   {in("ls", 1, D, -1, 0, 0.5), in("b", 1, D), in("ls_dot", 1, D),
                    in("b_dot", 1, D), in("z", N, D, -1, 0.4, 1.3),
                    in("z_dot", N, D, -1, -0.3, 1.1), out("g_y", N, D), out("g_y_dot", N, D),
                    out("g_ls", 1, D), out("g_b", 1, D), out("hv_ls", 1, D), out("hv_b", 1, D)},
                   kTolReduce, [=](const auto& ops, const Args& a) {
                     ops.actnorm_backward_hvp(N, D, inv_n, a.f("ls"), a.f("b"), a.f("ls_dot"),
                                              a.f("b_dot"), a.f("z"), a.f("z_dot"), a.f("g_y"),
                                              a.f("g_y_dot"), a.f("g_ls"), a.f("g_b"), a.f("hv_ls"),
                                              a.f("hv_b"));
                   });
}

// The gaps of x (ld > D) hold NaN sentinels: flagging them would mean reading past the row.
OpCase nonfinite_rows_case(int64_t N, int64_t D) {
  const int64_t ldx = D + kLdPadA;
  ArgSpec x = in("x", N, D, ldx);
  x.fill = Fill::nonfinite;
  ArgSpec flags{"flags", Kind::u8, Role::out, 1, N, N, Fill::flag_junk};
  return make_case("nonfinite_rows_" + size_tag(N, D), {x, flags}, 0.0,
                   [=](const auto& ops, const Args& a) {
                     ops.nonfinite_rows(N, D, a.f("x"), ldx, a.u("flags"));
                   });
}

// Row-major C[M,N] = alpha*op(A)*op(B) + beta*C with every ld padded past its width.
OpCase gemm_case(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K;
  const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N;
  const int64_t lda = a_cols + kLdPadA, ldb = b_cols + kLdPadB, ldc = N + kLdPadC;
  // beta == 0 must overwrite C, even where C holds NaN.
  ArgSpec C = beta == 0.f ? out("C", M, N, ldc) : inout("C", M, N, ldc);
  std::string name = std::string("gemm_") + (ta ? "T" : "N") + (tb ? "T" : "N") + "_M" +
                     std::to_string(M) + "_N" + std::to_string(N) + "_K" + std::to_string(K) +
                     (beta == 0.f ? "_beta0" : "_beta");
  return make_case(std::move(name), {in("A", a_rows, a_cols, lda), in("B", b_rows, b_cols, ldb), C},
                   kTolReduce, [=](const auto& ops, const Args& a) {
                     ops.gemm(ta, tb, M, N, K, alpha, a.f("A"), lda, a.f("B"), ldb, beta, a.f("C"),
                              ldc);
                   });
}

// The batched-task forms: B tasks, each a block of rows (or a block of parameters at a stride).
// Strides equal the blocks' padded sizes, so the sentinel gaps sit between tasks too.
OpCase gemm_batched_case(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t batch,
                         float beta) {
  const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K;
  const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N;
  const int64_t lda = a_cols + kLdPadA, ldb = b_cols + kLdPadB, ldc = N + kLdPadC;
  const int64_t sa = a_rows * lda, sb = b_rows * ldb, sc = M * ldc;
  ArgSpec C = beta == 0.f ? out("C", batch * M, N, ldc) : inout("C", batch * M, N, ldc);
  std::string name = std::string("gemm_batched_") + (ta ? "T" : "N") + (tb ? "T" : "N") + "_M" +
                     std::to_string(M) + "_N" + std::to_string(N) + "_K" + std::to_string(K) +
                     "_B" + std::to_string(batch) + (beta == 0.f ? "_beta0" : "_beta");
  return make_case(std::move(name),
                   {in("A", batch * a_rows, a_cols, lda), in("B", batch * b_rows, b_cols, ldb), C},
                   kTolReduce, [=](const auto& ops, const Args& a) {
                     ops.gemm_batched(ta, tb, M, N, K, 1.1f, a.f("A"), lda, sa, a.f("B"), ldb, sb,
                                      beta, a.f("C"), ldc, sc, batch);
                   });
}

OpCase broadcast_rows_batched_case(int64_t batch, int64_t n, int64_t W) {
  const int64_t sb = W + kLdPadA, ldd = W + kLdPadB;
  return make_case("broadcast_rows_batched_B" + std::to_string(batch) + "_" + size_tag(n, W),
                   {in("b", batch, W, sb), out("dst", batch * n, W, ldd)}, kTolElem,
                   [=](const auto& ops, const Args& a) {
                     ops.broadcast_rows_batched(batch, n, W, a.f("b"), sb, a.f("dst"), ldd);
                   });
}

OpCase col_sum_batched_case(int64_t batch, int64_t n, int64_t W, float beta) {
  const int64_t lds = W + kLdPadA, sd = W + kLdPadB;
  ArgSpec dst = beta == 0.f ? out("dst", batch, W, sd) : inout("dst", batch, W, sd);
  return make_case("col_sum_batched_B" + std::to_string(batch) + "_" + size_tag(n, W) +
                       (beta == 0.f ? "_beta0" : "_beta"),
                   {in("src", batch * n, W, lds, 0.3, 1.0), dst}, kTolReduce,
                   [=](const auto& ops, const Args& a) {
                     ops.col_sum_batched(batch, n, W, a.f("src"), lds, beta, a.f("dst"), sd);
                   });
}

std::vector<OpCase> all_cases() {
  std::vector<OpCase> cases;
  // Odd sizes, never multiples of a block; N = 0 checks the empty-batch semantics.
  const int64_t Ns[] = {0, 1, 7, 33, 257};
  const int64_t Ws[] = {1, 3, 48, 97, 130};
  for (int64_t N : Ns)
    for (int64_t W : Ws) {
      cases.push_back(gather_cols_case(N, W, W));
      if (W > 1) cases.push_back(gather_cols_case(N, W, W / 2));
      cases.push_back(broadcast_rows_case(N, W));
      cases.push_back(relu_case(N, W));
      cases.push_back(relu_mask_case(N, W));
      cases.push_back(relu_mask_inplace_case(N, W));
      cases.push_back(col_sum_case(N, W, 0.f));
      cases.push_back(col_sum_case(N, W, 0.75f));
      cases.push_back(coupling_forward_case(N, W));
      cases.push_back(coupling_inverse_case(N, W));
      cases.push_back(coupling_backward_case(N, W));
      cases.push_back(coupling_tangent_case(N, W));
      cases.push_back(coupling_backward_hvp_case(N, W));
      cases.push_back(actnorm_forward_case(N, W));
      cases.push_back(actnorm_inverse_case(N, W));
      cases.push_back(nll_rows_case(N, W));
      cases.push_back(actnorm_backward_case(N, W));
      cases.push_back(actnorm_tangent_case(N, W));
      cases.push_back(actnorm_backward_hvp_case(N, W));
      cases.push_back(nonfinite_rows_case(N, W));
    }
  // Training-sized reductions: many row chunks (two-stage path) and wide rows.
  for (int64_t W : {48, 2048}) {
    cases.push_back(col_sum_case(4096, W, 0.f));
    cases.push_back(col_sum_case(4096, W + 1, 0.75f));
    cases.push_back(actnorm_backward_case(4096, W));
    cases.push_back(actnorm_backward_hvp_case(4096, W));
    cases.push_back(coupling_forward_case(4096, W / 2 + 1));
    cases.push_back(nll_rows_case(4096, W));
    cases.push_back(nonfinite_rows_case(4096, W));
  }
  // All four transpose combinations, alpha/beta away from 1/0, and beta == 0 over NaN.
  struct Shape {
    int64_t M, N, K;
  };
  const Shape shapes[] = {{1, 1, 1}, {7, 3, 97}, {33, 130, 48}, {257, 97, 2048}, {3, 7, 0}};
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (const Shape& s : shapes) {
        cases.push_back(gemm_case(ta, tb, s.M, s.N, s.K, 1.3f, -0.6f));
        cases.push_back(gemm_case(ta, tb, s.M, s.N, s.K, 0.7f, 0.f));
      }
  // Batched tasks at the flow's shapes: rows x weights^T, weight gradients (reductions over a
  // task's rows) and inputs' gradients; one task, a few, and an empty task.
  for (int64_t batch : {1, 3, 4})
    for (const Shape& s : {Shape{33, 48, 20}, Shape{512, 80, 40}, Shape{0, 5, 3}}) {
      cases.push_back(gemm_batched_case(false, true, s.M, s.N, s.K, batch, 1.f));
      cases.push_back(gemm_batched_case(true, false, s.N, s.K, s.M, batch, 0.f));
      cases.push_back(gemm_batched_case(false, false, s.M, s.K, s.N, batch, 1.f));
    }
  for (int64_t batch : {1, 2, 5})
    for (int64_t n : {0, 1, 33, 512})
      for (int64_t W : {1, 40, 97}) {
        cases.push_back(broadcast_rows_batched_case(batch, n, W));
        cases.push_back(col_sum_batched_case(batch, n, W, 0.f));
        cases.push_back(col_sum_batched_case(batch, n, W, 0.75f));
      }
  // Tasks long enough for the chunked two-stage reduction, task by task.
  cases.push_back(col_sum_batched_case(2, 5000, 40, 0.f));
  cases.push_back(col_sum_batched_case(3, 4097, 97, 0.75f));
  return cases;
}

// ---------------------------------------------------------------------------------------------
// Buffers with sentinels.

constexpr int64_t kPad = 37;                   // sentinel elements before and after each body
constexpr uint32_t kSentinel32 = 0x7FBADBADu;  // a NaN: a stray read poisons the result too
constexpr uint8_t kSentinel8 = 0xA5;

int64_t body_elems(const ArgSpec& s) {
  return s.rows * s.ld;
}
int64_t total_elems(const ArgSpec& s) {
  return body_elems(s) + 2 * kPad;
}
bool in_gap(const ArgSpec& s, int64_t i) {
  return i % s.ld >= s.cols;
}

uint32_t bits_of(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}
float float_of(uint32_t u) {
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

// The initial bytes of one argument: sentinels in pads and gaps, the fill in the body.
std::vector<uint8_t> make_initial(const ArgSpec& s, std::mt19937& rng) {
  const size_t es = elem_size(s.kind);
  std::vector<uint8_t> bytes(total_elems(s) * es);
  auto put32 = [&](int64_t e, uint32_t v) { std::memcpy(&bytes[e * 4], &v, 4); };
  for (int64_t e = 0; e < total_elems(s); ++e) {
    if (es == 4)
      put32(e, kSentinel32);
    else
      bytes[e] = kSentinel8;
  }
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(static_cast<float>(s.a), static_cast<float>(s.b));
  std::vector<int32_t> perm;
  if (s.fill == Fill::perm) {
    perm.resize(s.range);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
  }
  for (int64_t r = 0; r < s.rows; ++r) {
    // One planted non-finite value in about a third of the rows.
    const int plant = s.fill == Fill::nonfinite ? static_cast<int>(rng() % 9) : 8;
    const int64_t plant_col = s.cols ? static_cast<int64_t>(rng() % s.cols) : 0;
    for (int64_t c = 0; c < s.cols; ++c) {
      const int64_t e = kPad + r * s.ld + c;
      switch (s.fill) {
        case Fill::normal:
        case Fill::nonfinite: {
          float v = static_cast<float>(s.a + s.b * normal(rng));
          if (s.fill == Fill::nonfinite && c == plant_col && plant < 3) {
            const float bad[] = {std::numeric_limits<float>::quiet_NaN(),
                                 std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity()};
            v = bad[plant];
          }
          put32(e, bits_of(v));
          break;
        }
        case Fill::uniform:
          put32(e, bits_of(uniform(rng)));
          break;
        case Fill::nan:
          put32(e, bits_of(std::numeric_limits<float>::quiet_NaN()));
          break;
        case Fill::perm:
          put32(e, static_cast<uint32_t>(perm.at(c)));
          break;
        case Fill::flag_junk:
          bytes[e] = 0xCC;
          break;
      }
    }
  }
  return bytes;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// Checks one backend's final bytes of one argument: pads and gaps untouched, inputs untouched.
// Returns false (after recording failures) when something is off.
void check_untouched(const ArgSpec& s, const std::vector<uint8_t>& init,
                     const std::vector<uint8_t>& got, const char* backend) {
  const size_t es = elem_size(s.kind);
  const int64_t n = total_elems(s);
  int64_t bad = 0, first = -1;
  for (int64_t e = 0; e < n; ++e) {
    const int64_t i = e - kPad;  // body index, negative or past the end in the pads
    const bool pad = i < 0 || i >= body_elems(s);
    if (!pad && !in_gap(s, i) && s.role != Role::in) continue;  // a result: compared elsewhere
    if (std::memcmp(&init[e * es], &got[e * es], es) != 0) {
      if (first < 0) first = e;
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0) << backend << ": " << bad << " element(s) of '" << s.name
                    << "' changed outside the op's output (first at offset " << first - kPad
                    << " from the body start; body has " << body_elems(s) << " elements, " << s.cols
                    << " valid per row of " << s.ld << ")";
}

// Compares one output's valid elements: exact for integers and flags, normalised error for
// floats, and no NaN/Inf allowed in either backend's floats.
void compare_result(const ArgSpec& s, const std::vector<uint8_t>& ref,
                    const std::vector<uint8_t>& got, double tol) {
  const size_t es = elem_size(s.kind);
  test::MaxError err;
  int64_t nonfinite_ref = 0, nonfinite_got = 0, mismatched = 0;
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t c = 0; c < s.cols; ++c) {
      const int64_t e = kPad + r * s.ld + c;
      if (s.kind != Kind::f32) {
        mismatched += std::memcmp(&ref[e * es], &got[e * es], es) != 0;
        if (s.kind == Kind::u8 && got[e] > 1) ++mismatched;  // flags are 0 or 1, nothing else
        continue;
      }
      uint32_t ur, ug;
      std::memcpy(&ur, &ref[e * 4], 4);
      std::memcpy(&ug, &got[e * 4], 4);
      const double vr = float_of(ur), vg = float_of(ug);
      if (!std::isfinite(vr)) ++nonfinite_ref;
      if (!std::isfinite(vg)) ++nonfinite_got;
      test::accumulate_max_error(err, vg, vr, r * s.ld + c);
    }
  if (s.kind != Kind::f32) {
    EXPECT_EQ(mismatched, 0) << "'" << s.name << "': " << mismatched << " element(s) differ";
    return;
  }
  EXPECT_EQ(nonfinite_ref, 0) << "'" << s.name << "': the CPU reference produced NaN/Inf "
                              << "(test inputs out of range?)";
  EXPECT_EQ(nonfinite_got, 0) << "'" << s.name << "': CUDA produced " << nonfinite_got
                              << " NaN/Inf (unwritten outputs stay NaN)";
  const double norm_err = err.normalised();
  EXPECT_LE(norm_err, tol) << "'" << s.name << "': normalised error " << norm_err << " (max |diff| "
                           << err.max_err << " at row " << err.worst / s.ld << " col "
                           << err.worst % s.ld << ", max |ref| " << err.max_ref << ")";
}

// ---------------------------------------------------------------------------------------------
// The differential test.

class FlowOpsDiff : public ::testing::TestWithParam<OpCase> {};

TEST_P(FlowOpsDiff, MatchesCpuReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: CPU-vs-CUDA comparison skipped";
#ifndef MIRAD_HAVE_CUDA
  GTEST_SKIP() << "built without the CUDA backend";
#else
  const OpCase& c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(fnv1a(c.name)));  // fixed seed per case
  std::vector<std::vector<uint8_t> > init;
  for (const ArgSpec& s : c.args) init.push_back(make_initial(s, rng));

  // CPU reference on host copies.
  std::vector<std::vector<uint8_t> > cpu = init;
  Args cpu_args;
  for (size_t k = 0; k < c.args.size(); ++k)
    cpu_args.set(c.args[k].name, cpu[k].data() + kPad * elem_size(c.args[k].kind));
  CpuFlowOps<float> cpu_ops;
  c.run_cpu(cpu_ops, cpu_args);

  // CUDA on device copies of the very same bytes, sentinels included.
  CudaFlowOps cuda_ops;
  std::vector<Buffer<uint8_t> > dev;
  Args cuda_args;
  for (size_t k = 0; k < c.args.size(); ++k) {
    dev.push_back(Buffer<uint8_t>::from_host(init[k], Device::cuda, cuda_ops.stream));
    cuda_args.set(c.args[k].name, dev.back().data() + kPad * elem_size(c.args[k].kind));
  }
  c.run_cuda(cuda_ops, cuda_args);
  cuda_ops.synchronize();

  for (size_t k = 0; k < c.args.size(); ++k) {
    const ArgSpec& s = c.args[k];
    SCOPED_TRACE("argument '" + s.name + "'");
    const std::vector<uint8_t> got = dev[k].to_host(cuda_ops.stream);
    check_untouched(s, init[k], cpu[k], "CPU reference");
    check_untouched(s, init[k], got, "CUDA");
    if (s.role != Role::in) compare_result(s, cpu[k], got, c.tol);
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(AllOps, FlowOpsDiff, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) {
                           return info.param.name;
                         });

// ---------------------------------------------------------------------------------------------
// Column reductions promise bit-identical results run to run (no float atomics).

TEST(CudaFlowOpsApi, ColumnReductionsAreDeterministic) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
#ifdef MIRAD_HAVE_CUDA
  const int64_t N = 4096, D = 333;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> z(N * D), ls(D), b(D);
  for (auto* v : {&z, &ls, &b})
    for (float& x : *v) x = normal(rng);
  CudaFlowOps ops;
  auto dz = Buffer<float>::from_host(z, Device::cuda, ops.stream);
  auto dls = Buffer<float>::from_host(ls, Device::cuda, ops.stream);
  auto db = Buffer<float>::from_host(b, Device::cuda, ops.stream);
  Buffer<float> g_y(N * D, Device::cuda), g_ls(D, Device::cuda), g_b(D, Device::cuda),
      sums(D, Device::cuda);
  std::vector<float> first_ls, first_b, first_sum;
  for (int run = 0; run < 3; ++run) {
    ops.actnorm_backward(N, D, 1.f / N, dls.data(), db.data(), dz.data(), g_y.data(), g_ls.data(),
                         g_b.data());
    ops.col_sum(N, D, dz.data(), D, 0.f, sums.data());
    ops.synchronize();
    auto h_ls = g_ls.to_host(ops.stream), h_b = g_b.to_host(ops.stream),
         h_sum = sums.to_host(ops.stream);
    if (run == 0) {
      first_ls = h_ls, first_b = h_b, first_sum = h_sum;
      continue;
    }
    EXPECT_EQ(0, std::memcmp(h_ls.data(), first_ls.data(), D * sizeof(float))) << "run " << run;
    EXPECT_EQ(0, std::memcmp(h_b.data(), first_b.data(), D * sizeof(float))) << "run " << run;
    EXPECT_EQ(0, std::memcmp(h_sum.data(), first_sum.data(), D * sizeof(float))) << "run " << run;
  }
#endif
}

// The methods validate before launching: bad sizes throw instead of faulting on the device.
TEST(CudaFlowOpsApi, RejectsBadArguments) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
#ifdef MIRAD_HAVE_CUDA
  CudaFlowOps ops;
  float* p = nullptr;
  EXPECT_THROW(ops.relu(-1, p, p), std::runtime_error);
  EXPECT_THROW(ops.broadcast_rows(-2, 4, p, p, 4), std::runtime_error);
  EXPECT_THROW(ops.broadcast_rows(2, 4, p, p, 3), std::runtime_error);  // ld < width
  EXPECT_THROW(ops.col_sum(4, 8, p, 7, 0.f, p), std::runtime_error);    // lds < width
  EXPECT_THROW(ops.coupling_forward(2, 3, 0.f, p, p, 3, p, 3, p, p), std::runtime_error);
  EXPECT_THROW(ops.gemm(false, false, 2, 2, 2, 1.f, p, 1, p, 2, 0.f, p, 2), std::runtime_error);
  EXPECT_THROW(ops.gemm(false, false, -1, 2, 2, 1.f, p, 2, p, 2, 0.f, p, 2), std::runtime_error);
  EXPECT_THROW(ops.relu(5, p, p), std::runtime_error);  // work but no buffers
  // Empty work is a no-op and needs no buffers.
  EXPECT_NO_THROW(ops.relu(0, p, p));
  EXPECT_NO_THROW(ops.coupling_forward(0, 5, 1.9f, p, p, 5, p, 5, p, p));
  EXPECT_NO_THROW(ops.gemm(true, true, 0, 3, 4, 1.f, p, 1, p, 4, 0.f, p, 3));
  EXPECT_NO_THROW(ops.synchronize());
#endif
}

}  // namespace
}  // namespace mirad
