// Per-element math of the affine coupling, ActNorm and their first and second derivatives.
// Shared verbatim by the CPU reference (kernels/flow_ops_cpu.h) and the CUDA kernels, so the
// two backends cannot drift apart in the formulas, only in summation order.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/hd.h"

namespace mirad::math {

// Explicit float/double overloads: unqualified exp() on the host would silently promote a
// float argument to the double C function, so the float CPU reference would not be float math.
MIRAD_HD float exp_(float x) { return expf(x); }
MIRAD_HD double exp_(double x) { return exp(x); }
MIRAD_HD float tanh_(float x) { return tanhf(x); }
MIRAD_HD double tanh_(double x) { return tanh(x); }

// Soft clamp s = a*tanh(u/a): keeps exp(s) bounded while staying smooth (CFlow/FrEIA).
template <typename T>
MIRAD_HD T soft_clamp(T u, T a) {
  return a * tanh_(u / a);
}
// ds/du = 1 - tanh^2(u/a) = 1 - (s/a)^2, written in terms of s so u need not be stored.
template <typename T>
MIRAD_HD T soft_clamp_grad(T s, T a) {
  T q = s / a;
  return T(1) - q * q;
}
// d^2s/du^2 = -2 (s/a^2) ds/du, again in terms of s.
template <typename T>
MIRAD_HD T soft_clamp_curv(T s, T a) {
  return T(-2) * s / (a * a) * soft_clamp_grad(s, a);
}

// Each function taking s and using exp(s) has an _e form that takes e = exp(s) as well: the
// CPU computes the exponentials of a whole row at once (kernels/vec_math.h), the CUDA kernels
// per element through the plain form. The arithmetic after exp is the same in both.

// Forward of one coupled element: y2 = x2*exp(s) + t.
template <typename T>
MIRAD_HD T coupling_y_e(T x2, T e, T t) {
  return x2 * e + t;
}
template <typename T>
MIRAD_HD T coupling_y(T x2, T s, T t) {
  return coupling_y_e(x2, exp_(s), t);
}
// Inverse: x2 = (y2 - t)*exp(-s); e_neg = exp(-s).
template <typename T>
MIRAD_HD T coupling_x_e(T y2, T e_neg, T t) {
  return (y2 - t) * e_neg;
}
template <typename T>
MIRAD_HD T coupling_x(T y2, T s, T t) {
  return coupling_x_e(y2, exp_(-s), t);
}

// Reverse mode of one coupled element. The loss holds -(1/N)*sum(s) from log|det J|, hence
// the -inv_n in dL/ds. Outputs: dL/du (through the clamp), dL/dt and dL/dx2.
template <typename T>
struct CouplingGrad {
  T g_u, g_t, g_x2;
};
template <typename T>
MIRAD_HD CouplingGrad<T> coupling_grad_e(T g_y2, T x2, T s, T e, T a, T inv_n) {
  T g_s = g_y2 * x2 * e - inv_n;
  return {g_s * soft_clamp_grad(s, a), g_y2, g_y2 * e};
}
template <typename T>
MIRAD_HD CouplingGrad<T> coupling_grad(T g_y2, T x2, T s, T a, T inv_n) {
  return coupling_grad_e(g_y2, x2, s, exp_(s), a, inv_n);
}

// Forward-mode tangent (R-operator) of one coupled element, given tangents of u, t and x2.
template <typename T>
struct CouplingTangent {
  T s_dot, y2_dot;
};
template <typename T>
MIRAD_HD CouplingTangent<T> coupling_tangent_e(T x2, T s, T e, T a, T u_dot, T t_dot, T x2_dot) {
  T s_dot = u_dot * soft_clamp_grad(s, a);
  return {s_dot, (x2_dot + x2 * s_dot) * e + t_dot};
}
template <typename T>
MIRAD_HD CouplingTangent<T> coupling_tangent(T x2, T s, T a, T u_dot, T t_dot, T x2_dot) {
  return coupling_tangent_e(x2, s, exp_(s), a, u_dot, t_dot, x2_dot);
}

// Tangent of the reverse pass (forward-over-reverse): R{dL/du}, R{dL/dt}, R{dL/dx2}, plus the
// plain gradients, from g_y2, its tangent, and the primal and tangent of x2 and s.
template <typename T>
struct CouplingGradHvp {
  CouplingGrad<T> g;
  CouplingGrad<T> g_dot;
};
template <typename T>
MIRAD_HD CouplingGradHvp<T> coupling_grad_hvp_e(T g_y2, T g_y2_dot, T x2, T x2_dot, T s, T s_dot,
                                                T e, T a, T inv_n) {
  T g_s = g_y2 * x2 * e - inv_n;
  T g_s_dot = (g_y2_dot * x2 + g_y2 * x2_dot + g_y2 * x2 * s_dot) * e;
  T dsdu = soft_clamp_grad(s, a);
  CouplingGradHvp<T> r;
  r.g = {g_s * dsdu, g_y2, g_y2 * e};
  // d/de of dsdu along the tangent: curvature times u_dot, and u_dot = s_dot / dsdu.
  T q = s / a;
  T dsdu_dot = T(-2) * q / a * s_dot;
  r.g_dot = {g_s_dot * dsdu + g_s * dsdu_dot, g_y2_dot, (g_y2_dot + g_y2 * s_dot) * e};
  return r;
}
template <typename T>
MIRAD_HD CouplingGradHvp<T> coupling_grad_hvp(T g_y2, T g_y2_dot, T x2, T x2_dot, T s, T s_dot,
                                              T a, T inv_n) {
  return coupling_grad_hvp_e(g_y2, g_y2_dot, x2, x2_dot, s, s_dot, exp_(s), a, inv_n);
}

// ActNorm element: z = y*exp(ls) + b (e = exp(ls), e_neg = exp(-ls)).
template <typename T>
MIRAD_HD T actnorm_z_e(T y, T e, T b) {
  return y * e + b;
}
template <typename T>
MIRAD_HD T actnorm_z(T y, T ls, T b) {
  return actnorm_z_e(y, exp_(ls), b);
}
template <typename T>
MIRAD_HD T actnorm_y_e(T z, T e_neg, T b) {
  return (z - b) * e_neg;
}
template <typename T>
MIRAD_HD T actnorm_y(T z, T ls, T b) {
  return actnorm_y_e(z, exp_(-ls), b);
}

// Reverse mode of ActNorm + NLL for one element, L = mean_n NLL so dL/dz = z/N. e = exp(ls).
// Returns dL/dy and this element's terms of the column sums dL/dls (+= (z/N)(z-b)) and dL/db.
template <typename T>
struct ActnormGrad {
  T g_y, g_ls_term, g_b_term;
};
template <typename T>
MIRAD_HD ActnormGrad<T> actnorm_grad(T z, T e, T b, T inv_n) {
  const T gz = z * inv_n;
  return {gz * e, gz * (z - b), gz};
}

// actnorm_grad and its tangent along (ls_dot, b_dot) with z's tangent z_dot.
template <typename T>
struct ActnormGradHvp {
  T g_y, g_y_dot, g_ls_term, g_b_term, hv_ls_term, hv_b_term;
};
template <typename T>
MIRAD_HD ActnormGradHvp<T> actnorm_grad_hvp(T z, T z_dot, T e, T b, T ls_dot, T b_dot, T inv_n) {
  const T gz = z * inv_n, gzd = z_dot * inv_n;
  return {gz * e, (gzd + gz * ls_dot) * e, gz * (z - b), gz, gzd * (z - b) + gz * (z_dot - b_dot),
          gzd};
}

// Tangent of z = y*e + b: z_dot = (y_dot + y*ls_dot)*e + b_dot.
template <typename T>
MIRAD_HD T actnorm_z_dot(T y, T y_dot, T e, T ls_dot, T b_dot) {
  return (y_dot + y * ls_dot) * e + b_dot;
}

// 0.5*log(2*pi), the per-dimension constant of the standard normal NLL.
template <typename T>
MIRAD_HD T half_log_2pi() {
  return T(0.91893853320467274178032973640562);
}

// NLL of one sample from its |z|^2, log|det J| of the couplings and sum(ls) of ActNorm.
template <typename T>
MIRAD_HD T nll_from_parts(T z_sq, T log_det, T sum_ls, int64_t D) {
  return T(0.5) * z_sq - log_det - sum_ls + T(D) * half_log_2pi<T>();
}

}  // namespace mirad::math
