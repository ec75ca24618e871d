// Benchmark generator defects: scratch, crack, stain, foreign patch and hole/dent, each drawn
// with anti-aliased coverage into the image and a binary ground-truth mask.
#include <cmath>

#include "core/error.h"
#include "tools/synth/synth_internal.h"

namespace mirad::synth::detail {

using nlohmann::json;

void stamp_capsule(Coverage& cov, double x0, double y0, double x1, double y1, double r0,
                   double r1, double s0, double s1, double mask_min_radius) {
  const double rmax = std::max({r0, r1, mask_min_radius}) + 1.0;
  const int bx0 = std::max(0, static_cast<int>(std::floor(std::min(x0, x1) - rmax)));
  const int by0 = std::max(0, static_cast<int>(std::floor(std::min(y0, y1) - rmax)));
  const int bx1 = std::min(cov.width - 1, static_cast<int>(std::ceil(std::max(x0, x1) + rmax)));
  const int by1 = std::min(cov.height - 1, static_cast<int>(std::ceil(std::max(y0, y1) + rmax)));
  const double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
  for (int y = by0; y <= by1; ++y)
    for (int x = bx0; x <= bx1; ++x) {
      const double px = x + 0.5 - x0, py = y + 0.5 - y0;
      const double t = len2 > 0 ? clamp01((px * dx + py * dy) / len2) : 0.0;
      const double d = std::hypot(px - t * dx, py - t * dy);
      const double r = lerp(r0, r1, t), s = lerp(s0, s1, t);
      // Coverage of a pixel by a stroke of half-width r: linear over the pixel's width, which
      // also makes strokes thinner than a pixel fade in intensity instead of vanishing.
      const double a = std::min(clamp01(r + 0.5 - d), 2 * r) * s;
      const std::size_t i = static_cast<std::size_t>(y) * cov.width + x;
      cov.render[i] = std::max(cov.render[i], static_cast<float>(std::min(a, 1.0)));
      if (s > 0.2 && d <= std::max(r, mask_min_radius)) cov.mask[i] = 1.f;
    }
}

Blob Blob::random(Rng& rng, double cx, double cy, double radius, double irregularity) {
  Blob b;
  b.cx = cx, b.cy = cy, b.radius = radius;
  b.angle = rng.uniform(0, 2 * kPi);
  b.aspect = rng.uniform(1.0 - 0.4 * irregularity, 1.0);
  for (int k = 0; k < 4; ++k) {
    b.amp[k] = rng.uniform(0, irregularity * 0.3 / (k + 1));
    b.phase[k] = rng.uniform(0, 2 * kPi);
  }
  return b;
}

double Blob::signed_distance(double x, double y) const {
  const double dx = x - cx, dy = y - cy;
  const double ca = std::cos(angle), sa = std::sin(angle);
  const double u = ca * dx + sa * dy, v = (-sa * dx + ca * dy) / aspect;
  const double phi = std::atan2(v, u), d = std::hypot(u, v);
  double r = 1;
  for (int k = 0; k < 4; ++k) r += amp[k] * std::cos((k + 2) * phi + phase[k]);
  // d - R(phi) is a distance along the ray; good enough near the edge, where it matters.
  return (d - radius * r) * std::sqrt(aspect);
}

json Blob::to_json() const {
  return {{"cx", r4(cx)}, {"cy", r4(cy)}, {"radius", r4(radius)}, {"angle", r4(angle)},
          {"aspect", r4(aspect)}};
}

namespace {

// Applies a per-pixel colour change p' = f(p, a) wherever the coverage a > 0.
template <typename F>
void apply(Canvas& c, const std::vector<float>& cov, F&& f) {
  for (int y = 0; y < c.height; ++y)
    for (int x = 0; x < c.width; ++x) {
      const float a = cov[static_cast<std::size_t>(y) * c.width + x];
      if (a > 0) f(c.px(x, y), static_cast<double>(a), x, y);
    }
}

void to_mask(const std::vector<float>& cov, std::vector<uint8_t>& mask, float threshold) {
  for (std::size_t i = 0; i < cov.size(); ++i) mask[i] = cov[i] >= threshold ? 1 : 0;
}

// A brighter defect moves toward white, a darker one toward black, by `amount` of the way,
// but by at least `amount` * 70 levels: purely relative changes would make every dark scratch
// on dark steel invisible, which is not what a camera sees of a groove that catches no light.
void shift(float* p, double amount, bool brighter) {
  constexpr double kFloor = 70;
  for (int k = 0; k < 3; ++k) {
    const double v = brighter ? p[k] + amount * std::max(255.0 - p[k], kFloor)
                              : p[k] - amount * std::max(static_cast<double>(p[k]), kFloor);
    p[k] = static_cast<float>(std::clamp(v, 0.0, 255.0));
  }
}

// Mean luma (0..255) of the canvas around (x, y), to pick a defect's visible polarity.
double local_luma(const Canvas& c, double x, double y, double radius) {
  double m[3];
  region_mean(c, int(x - radius), int(y - radius), int(x + radius) + 1, int(y + radius) + 1, m);
  return 0.299 * m[0] + 0.587 * m[1] + 0.114 * m[2];
}

// A point where the defect's centre may go: away from the border, so most of it is in view.
std::pair<double, double> centre(Rng& rng, int size, double margin = 0.15) {
  return {rng.uniform(margin, 1 - margin) * size, rng.uniform(margin, 1 - margin) * size};
}

// Thin curved line: a quadratic Bezier with tapered ends, brighter (bare metal, scuffed
// coating) or darker (groove) than its surroundings.
json draw_scratch(const CategoryContext& ctx, Canvas& c, std::vector<uint8_t>& mask, Rng& rng) {
  const double k = ctx.size / 256.0;
  const auto [cx, cy] = centre(rng, ctx.size);
  const double length = rng.uniform(40, 170) * k, theta = rng.uniform(0, 2 * kPi);
  const double bend = rng.uniform(-0.3, 0.3) * length;
  const double radius = rng.uniform(0.35, 1.3) * k;
  const double contrast = rng.uniform(0.1, 0.55) * ctx.spec->defect_contrast;
  // Scratches on dark steel mostly show bright metal; on light surfaces, dark grooves.
  const double luma = local_luma(c, cx, cy, 0.3 * length);
  const bool brighter = rng.bernoulli(std::clamp((215.0 - luma) / 120.0, 0.03, 0.85));
  const double dx = std::cos(theta), dy = std::sin(theta);
  const double p0x = cx - dx * length / 2, p0y = cy - dy * length / 2;
  const double p2x = cx + dx * length / 2, p2y = cy + dy * length / 2;
  const double p1x = cx - dy * bend, p1y = cy + dx * bend;
  Coverage cov(c.width, c.height);
  const int n = std::max(8, static_cast<int>(length / 2));
  double wobble = rng.uniform(0, 2 * kPi);
  auto point = [&](double t, double& x, double& y) {
    const double u = 1 - t;
    x = u * u * p0x + 2 * u * t * p1x + t * t * p2x;
    y = u * u * p0y + 2 * u * t * p1y + t * t * p2y;
  };
  // Pressure along the stroke: zero at the ends, with a slow random variation.
  auto strength = [&](double t) {
    return std::pow(std::sin(kPi * t), 0.4) * (0.8 + 0.2 * std::sin(wobble + 9 * t));
  };
  for (int i = 0; i < n; ++i) {
    const double t0 = double(i) / n, t1 = double(i + 1) / n;
    double x0, y0, x1, y1;
    point(t0, x0, y0);
    point(t1, x1, y1);
    stamp_capsule(cov, x0, y0, x1, y1, radius, radius, strength(t0), strength(t1), 0.9 * k);
  }
  apply(c, cov.render, [&](float* p, double a, int, int) { shift(p, a * contrast, brighter); });
  to_mask(cov.mask, mask, 0.5f);
  return {{"length", r4(length)}, {"angle", r4(theta)}, {"bend", r4(bend)},
          {"width", r4(2 * radius)}, {"contrast", r4(contrast)},
          {"polarity", brighter ? "bright" : "dark"}, {"start", {r4(p0x), r4(p0y)}},
          {"end", {r4(p2x), r4(p2y)}}};
}

// Branching random walk, dark, tapering from its start; branches split off at 20-55 degrees.
json draw_crack(const CategoryContext& ctx, Canvas& c, std::vector<uint8_t>& mask, Rng& rng) {
  const double k = ctx.size / 256.0;
  const auto [cx, cy] = centre(rng, ctx.size, 0.2);
  const int steps = rng.uniform_int(45, 150);
  const double step = 1.6 * k, width0 = rng.uniform(0.45, 1.4) * k;
  const double contrast = rng.uniform(0.18, 0.85) * ctx.spec->defect_contrast;
  const double jitter = rng.uniform(0.12, 0.3);
  Coverage cov(c.width, c.height);
  struct Walk {
    double x, y, dir, radius;
    int steps;
  };
  std::vector<Walk> todo{{cx, cy, rng.uniform(0, 2 * kPi), width0, steps}};
  int n_branches = 0, total_steps = 0;
  while (!todo.empty()) {
    Walk w = todo.back();
    todo.pop_back();
    const double r_end = std::max(0.25 * k, w.radius * 0.35);
    for (int i = 0; i < w.steps; ++i) {
      // Mostly gentle meandering, sometimes a sharp kink, as fractures follow grain boundaries.
      w.dir += rng.bernoulli(0.06) ? rng.normal(0, 0.7) : rng.normal(0, jitter);
      const double nx = w.x + step * std::cos(w.dir), ny = w.y + step * std::sin(w.dir);
      const double r0 = lerp(w.radius, r_end, double(i) / w.steps);
      const double r1 = lerp(w.radius, r_end, double(i + 1) / w.steps);
      stamp_capsule(cov, w.x, w.y, nx, ny, r0, r1, 1.0, 1.0, 0.9 * k);
      w.x = nx, w.y = ny;
      ++total_steps;
      if (n_branches < 4 && w.steps - i > 12 && rng.bernoulli(0.025)) {
        ++n_branches;
        const double side = rng.bernoulli(0.5) ? 1 : -1;
        todo.push_back({w.x, w.y, w.dir + side * rng.uniform(0.35, 0.95), r0 * 0.75,
                        static_cast<int>((w.steps - i) * rng.uniform(0.3, 0.7))});
      }
    }
  }
  apply(c, cov.render, [&](float* p, double a, int, int) { shift(p, a * contrast, false); });
  to_mask(cov.mask, mask, 0.5f);
  return {{"start", {r4(cx), r4(cy)}}, {"steps", total_steps}, {"step", r4(step)},
          {"width", r4(2 * width0)}, {"contrast", r4(contrast)}, {"jitter", r4(jitter)},
          {"branches", n_branches}};
}

// Soft-edged irregular blob that shifts colour and brightness by a few percent: rust, oil,
// water or a bleached spot. The mask is the blob's half-strength contour.
json draw_stain(const CategoryContext& ctx, Canvas& c, std::vector<uint8_t>& mask, Rng& rng) {
  const double k = ctx.size / 256.0;
  const auto [cx, cy] = centre(rng, ctx.size);
  const Blob blob = Blob::random(rng, cx, cy, rng.uniform(10, 40) * k, 1.0);
  const double softness = rng.uniform(0.25, 0.7) * blob.radius;
  double strength = rng.uniform(0.12, 0.45) * ctx.spec->defect_contrast;
  const bool ring = rng.bernoulli(0.4);  // a darker rim, as a dried drop leaves
  // Each kind pulls the colour toward its own: a fixed colour (rust, oil, bleach) or a darker
  // version of the surface (water). Absolute targets keep stains visible on dark and light
  // surfaces alike; `strength` is how far of the way, 0.12 being hard to see.
  struct Kind {
    const char* name;
    double target[3];  // negative: that fraction of the pixel's own value
  };
  static constexpr Kind kinds[] = {{"rust", {150, 72, 32}},
                                   {"oil", {28, 27, 30}},
                                   {"water", {-0.6, -0.62, -0.66}},
                                   {"bleach", {236, 232, 222}}};
  const Kind& kind = kinds[rng.uniform_int(0, 3)];
  // An oil stain on black steel would change nothing at any strength; a floor on the change
  // of the surface's mean colour keeps every stain visible, if barely.
  const double min_change = rng.uniform(9, 18) * ctx.spec->defect_contrast;
  double mean[3], largest = 0;
  region_mean(c, int(cx - blob.radius), int(cy - blob.radius), int(cx + blob.radius) + 1,
              int(cy + blob.radius) + 1, mean);
  for (int ch = 0; ch < 3; ++ch) {
    const double t = kind.target[ch] >= 0 ? kind.target[ch] : -kind.target[ch] * mean[ch];
    largest = std::max(largest, std::abs(t - mean[ch]));
  }
  strength = std::min(0.9, std::max(strength, min_change / std::max(largest, 1.0)));
  Coverage cov(c.width, c.height);
  const double reach = blob.radius * 1.7 + softness;
  for (int y = std::max(0, int(cy - reach)); y < std::min(c.height, int(cy + reach) + 1); ++y)
    for (int x = std::max(0, int(cx - reach)); x < std::min(c.width, int(cx + reach) + 1); ++x) {
      const double sd = blob.signed_distance(x + 0.5, y + 0.5);
      double a = 1 - smoothstep(-softness / 2, softness / 2, sd);
      if (ring) a *= 0.65 + 0.35 * std::exp(-std::pow((sd + softness * 0.3) / softness, 2) * 4);
      const std::size_t i = static_cast<std::size_t>(y) * c.width + x;
      cov.render[i] = static_cast<float>(a);
      cov.mask[i] = sd <= 0 ? 1.f : 0.f;
    }
  apply(c, cov.render, [&](float* p, double a, int, int) {
    for (int ch = 0; ch < 3; ++ch) {
      const double t = kind.target[ch] >= 0 ? kind.target[ch] : -kind.target[ch] * p[ch];
      p[ch] = static_cast<float>(lerp(p[ch], t, a * strength));
    }
  });
  to_mask(cov.mask, mask, 0.5f);
  json j = blob.to_json();
  j.update({{"kind", kind.name}, {"strength", r4(strength)}, {"softness", r4(softness)},
            {"ring", ring}});
  return j;
}

// A patch of another texture (another category's source) blended in with a feathered edge:
// debris, a label remnant, a wrong-material inclusion. Its brightness is pulled part of the
// way to the surroundings, so some patches differ mostly in structure.
json draw_foreign_patch(const CategoryContext& ctx, Canvas& c, std::vector<uint8_t>& mask,
                        Rng& rng) {
  CHECK_THROW(!ctx.donors.empty());
  const double k = ctx.size / 256.0;
  const auto [cx, cy] = centre(rng, ctx.size);
  const Blob blob = Blob::random(rng, cx, cy, rng.uniform(10, 34) * k, 0.8);
  const double feather = rng.uniform(1.5, 4.5) * k;
  const double cs = ctx.spec->defect_contrast;
  const double match = 1 - (1 - rng.uniform(0.3, 0.95)) * cs;
  const double opacity = rng.uniform(0.6, 1.0) * (0.5 + 0.5 * cs);
  const int donor_index = rng.uniform_int(0, static_cast<int>(ctx.donors.size()) - 1);
  const Texture& donor = *ctx.donors[donor_index];
  const double ox = rng.uniform(0, donor.pixels.width), oy = rng.uniform(0, donor.pixels.height);
  const double rot = rng.uniform(0, 2 * kPi), cr = std::cos(rot), sr = std::sin(rot);
  const double reach = blob.radius * 1.7 + feather;
  const int x0 = std::max(0, int(cx - reach)), x1 = std::min(c.width, int(cx + reach) + 1);
  const int y0 = std::max(0, int(cy - reach)), y1 = std::min(c.height, int(cy + reach) + 1);
  // Donor pixels over the bounding box, and both means, for the brightness match.
  Canvas patch(x1 - x0, y1 - y0);
  double donor_mean[3] = {0, 0, 0}, local_mean[3];
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) {
      const double u = x + 0.5 - cx, v = y + 0.5 - cy;
      float* p = patch.px(x - x0, y - y0);
      sample_wrap(donor.pixels, ox + cr * u - sr * v, oy + sr * u + cr * v, p);
      for (int ch = 0; ch < 3; ++ch) donor_mean[ch] += p[ch];
    }
  for (double& m : donor_mean) m /= std::max(1, patch.width * patch.height);
  region_mean(c, x0, y0, x1, y1, local_mean);
  Coverage cov(c.width, c.height);
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) {
      const double sd = blob.signed_distance(x + 0.5, y + 0.5);
      const std::size_t i = static_cast<std::size_t>(y) * c.width + x;
      cov.render[i] = static_cast<float>(opacity * (1 - smoothstep(-feather, feather, sd)));
      cov.mask[i] = sd <= 0 ? 1.f : 0.f;
    }
  apply(c, cov.render, [&](float* p, double a, int x, int y) {
    const float* d = patch.px(x - x0, y - y0);
    for (int ch = 0; ch < 3; ++ch) {
      const double matched = d[ch] + match * (local_mean[ch] - donor_mean[ch]);
      p[ch] = static_cast<float>(lerp(p[ch], matched, a));
    }
  });
  to_mask(cov.mask, mask, 0.5f);
  json j = blob.to_json();
  j.update({{"donor", donor.source.package + ":" + donor.source.path},
            {"feather", r4(feather)}, {"brightness_match", r4(match)},
            {"opacity", r4(opacity)}});
  return j;
}

// An elliptical hole (dark core, lit far wall, bright burr rim) or a shallow dent (shading
// from the slope of a smooth depression), both lit from a random direction.
json draw_hole(const CategoryContext& ctx, Canvas& c, std::vector<uint8_t>& mask, Rng& rng) {
  const double k = ctx.size / 256.0;
  const auto [cx, cy] = centre(rng, ctx.size);
  const double a = rng.uniform(5, 16) * k, b = a * rng.uniform(0.55, 1.0);
  const double phi = rng.uniform(0, kPi), light = rng.uniform(0, 2 * kPi);
  const bool dent = rng.bernoulli(0.5);
  const double depth =
      (dent ? rng.uniform(0.2, 0.9) : rng.uniform(0.3, 0.9)) * ctx.spec->defect_contrast;
  const double cp = std::cos(phi), sp = std::sin(phi), lx = std::cos(light), ly = std::sin(light);
  Coverage cov(c.width, c.height);
  std::vector<float> shade(cov.render.size(), 0.f);  // signed: + brighter, - darker
  const double reach = a * 1.4 + 2;
  for (int y = std::max(0, int(cy - reach)); y < std::min(c.height, int(cy + reach) + 1); ++y)
    for (int x = std::max(0, int(cx - reach)); x < std::min(c.width, int(cx + reach) + 1); ++x) {
      const double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      const double u = (cp * dx + sp * dy) / a, v = (-sp * dx + cp * dy) / b;
      const double rho = std::hypot(u, v);
      // Unit direction from the centre in image space, to light the walls.
      const double ux = dx / (std::hypot(dx, dy) + 1e-9), uy = dy / (std::hypot(dx, dy) + 1e-9);
      const double facing = ux * lx + uy * ly;  // > 0: this side faces away from the light
      const std::size_t i = static_cast<std::size_t>(y) * c.width + x;
      double s;
      if (dent) {
        // h = -(1 - rho^2)^2 inside; its slope along the light direction shades the pixel.
        const double t = std::max(0.0, 1 - rho * rho);
        const double slope = 4 * t * rho;  // |dh/drho|, peaks mid-radius
        s = depth * (0.9 * slope * facing - 0.25 * t * t);
        cov.mask[i] = rho <= 0.85 ? 1.f : 0.f;
      } else {
        const double inside = clamp01((1 - rho) * std::min(a, b) + 0.5);
        const double wall = smoothstep(0.5, 0.95, rho) * inside * std::max(0.0, facing);
        const double burr = std::exp(-std::pow((rho - 1.12) / 0.1, 2)) * std::max(0.0, -facing);
        s = -depth * inside * (0.75 + 0.25 * (1 - rho * rho)) + depth * 0.9 * wall +
            depth * 0.5 * burr;
        cov.mask[i] = rho <= 1.0 ? 1.f : 0.f;
      }
      shade[i] = static_cast<float>(std::clamp(s, -0.95, 0.95));
      cov.render[i] = s != 0 ? 1.f : 0.f;
    }
  apply(c, cov.render, [&](float* p, double, int x, int y) {
    const float s = shade[static_cast<std::size_t>(y) * c.width + x];
    shift(p, std::abs(s), s > 0);
  });
  to_mask(cov.mask, mask, 0.5f);
  return {{"variant", dent ? "dent" : "hole"}, {"cx", r4(cx)}, {"cy", r4(cy)},
          {"radius_a", r4(a)}, {"radius_b", r4(b)}, {"angle", r4(phi)},
          {"light_angle", r4(light)}, {"depth", r4(depth)}};
}

}  // namespace

json draw_defect(const CategoryContext& ctx, DefectType type, Canvas& canvas,
                 std::vector<uint8_t>& mask, Rng& rng) {
  switch (type) {
    case DefectType::scratch: return draw_scratch(ctx, canvas, mask, rng);
    case DefectType::crack: return draw_crack(ctx, canvas, mask, rng);
    case DefectType::stain: return draw_stain(ctx, canvas, mask, rng);
    case DefectType::foreign_patch: return draw_foreign_patch(ctx, canvas, mask, rng);
    case DefectType::hole: return draw_hole(ctx, canvas, mask, rng);
  }
  CHECK_THROW(false);
  return {};
}

}  // namespace mirad::synth::detail
