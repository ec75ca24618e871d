// Benchmark generator sources: the built-in categories and their Debian-packaged textures,
// loading them, and the procedural fallback textures.
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>
#include <system_error>

#include "core/error.h"
#include "host/resize.h"
#include "tools/synth/synth.h"
#include "tools/synth/synth_internal.h"

namespace mirad::synth {

namespace fs = std::filesystem;
using namespace detail;

namespace {

constexpr const char* kUfo = "ufoai-textures";
constexpr const char* kMypaint = "mypaint-data-extras";
// Where fetch_textures.sh unzips the game's 0textures.pk3, and where dpkg-deb puts mypaint's
// backgrounds, inside the package folder.
constexpr const char* kUfoDir = "pk3/textures/";
constexpr const char* kMypaintDir = "usr/share/mypaint/backgrounds/";

TextureSource ufo(const char* path) { return {kUfo, std::string(kUfoDir) + path}; }
TextureSource mypaint(const char* path) { return {kMypaint, std::string(kMypaintDir) + path}; }

// Chosen by looking at the packages' textures: each category's sources are photographs of one
// kind of surface with a similar look, so that good images vary like one product line does.
std::vector<CategorySpec> make_specs() {
  std::vector<CategorySpec> s;
  s.push_back({"metal_plate", "flat steel sheet, mottled grey",
               {ufo("tex_material/metall008.png"), ufo("tex_material/metall010a.png"),
                ufo("tex_material/metall014.png")},
               1.0, 6.0, 0.08});
  s.push_back({"tread_plate", "diamond-pattern steel tread plate",
               {ufo("tex_material/metal002.png"), ufo("tex_material/metall007.png")},
               1.0, 4.0, 0.06});
  s.push_back({"perforated_metal", "punched steel sheet, staggered round holes",
               {ufo("tex_buildings/metal02.png")}, 1.0, 3.0, 0.05});
  s.push_back({"concrete", "smooth grey cast concrete",
               {ufo("tex_ctp1/concrete_g_9.jpg"), ufo("tex_buildings/concrete002.jpg"),
                ufo("tex_buildings/concrete024.png")},
               1.0, 8.0, 0.1});
  s.push_back({"wood", "dark walnut-like wood grain",
               {ufo("tex_material/wood002.png"), ufo("tex_material/wood008.png"),
                ufo("tex_material/wood012.png")},
               1.0, 4.0, 0.08});
  s.push_back({"woven_fabric", "plain-weave canvas",
               {mypaint("ramon/HR_Canvas 01.png"), mypaint("ramon/HR_Canvas 02.png"),
                mypaint("mrmamurk/mamurk_e_1.png")},
               1.0, 3.0, 0.06, 0.55});
  s.push_back({"carpet", "short-pile carpet, tan and rust",
               {ufo("tex_buildings/carpet027.png"), ufo("tex_buildings/carpet031.png")}, 1.0,
               8.0, 0.08});
  s.push_back({"tiles", "beige square floor tiles with grout lines",
               {ufo("tex_buildings/floor008.png")}, 0.8, 2.0, 0.05});
  s.push_back({"cork", "pressed cork board", {mypaint("ramon/HR_Cork.png")}, 1.0, 8.0, 0.08});
  return s;
}

// ---- procedural fallback -------------------------------------------------------------------
// Each generator paints a tileable size x size texture from a fixed seed per (generator,
// variant): the sources are fixed like packaged files, only the crops depend on --seed.

using Painter = void (*)(Canvas&, Rng&, int variant);

void put(Canvas& c, int x, int y, double r, double g, double b) {
  float* p = c.px(x, y);
  p[0] = static_cast<float>(r), p[1] = static_cast<float>(g), p[2] = static_cast<float>(b);
}

// Brushed steel: anisotropic streaks (fast across, slow along the brushing direction) over a
// low-frequency mottle.
void paint_metal_base(Canvas& c, Rng& rng, double base, double tint) {
  const int n = c.width;
  Fbm mottle(4, 4, 5, 0.55, rng);
  Fbm streak(2, 128, 3, 0.5, rng);
  Fbm stain(3, 3, 4, 0.6, rng);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const double v = base + 16 * mottle.at(x, y, n) + 7 * streak.at(x, y, n) +
                       2.0 * rng.normal();
      const double dark = 18 * smoothstep(0.25, 0.6, stain.at(x, y, n));
      put(c, x, y, v - dark - tint, v - dark, v - dark + tint);
    }
}

void paint_metal_plate(Canvas& c, Rng& rng, int variant) {
  paint_metal_base(c, rng, variant == 0 ? 118 : 96, variant == 0 ? 3 : 1);
}

// Raised diamond lugs on a 64-px grid, alternately at +-45 degrees, lit from the top left.
void paint_tread_plate(Canvas& c, Rng& rng, int variant) {
  paint_metal_base(c, rng, variant == 0 ? 92 : 80, 2);
  const int n = c.width, cell = 64;
  const double a = 21, b = 5.5;  // lug half-length and half-width
  const double lx = -0.7071, ly = -0.7071;
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const int i = x / cell, j = y / cell;
      const double ux = x + 0.5 - (i + 0.5) * cell, uy = y + 0.5 - (j + 0.5) * cell;
      const double ang = ((i + j) % 2 ? 1 : -1) * kPi / 4;
      const double ca = std::cos(ang), sa = std::sin(ang);
      const double u = ca * ux + sa * uy, v = -sa * ux + ca * uy;
      const double rho2 = (u * u) / (a * a) + (v * v) / (b * b);
      if (rho2 >= 1.15) continue;
      // A lens-shaped dome: slope from the height h = 1 - rho^2, rotated back to image axes.
      const double du = -2 * u / (a * a), dv = -2 * v / (b * b);
      const double gx = ca * du - sa * dv, gy = sa * du + ca * dv;
      const double shade = std::clamp(-(gx * lx + gy * ly) * b * 0.9, -0.8, 0.8);
      const double inside = 1 - smoothstep(0.85, 1.15, rho2);
      float* p = c.px(x, y);
      for (int k = 0; k < 3; ++k) {
        const double lit = p[k] * 1.18 + 70 * shade;
        p[k] = static_cast<float>(lerp(p[k], lit, inside));
      }
    }
}

// Round holes on a staggered grid, dark inside, with a lit lower-right rim.
void paint_perforated_metal(Canvas& c, Rng& rng, int variant) {
  paint_metal_base(c, rng, variant == 0 ? 128 : 110, 2);
  const int n = c.width, pitch = 32;
  const double r = variant == 0 ? 8.0 : 7.0;
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const int j = y / pitch;
      const double off = (j % 2) * pitch / 2.0;
      const double fx = std::fmod(x + 0.5 - off + n, pitch) - pitch / 2.0;
      const double fy = (y + 0.5) - (j + 0.5) * pitch;
      const double d = std::sqrt(fx * fx + fy * fy);
      float* p = c.px(x, y);
      const double rim = std::exp(-std::pow((d - r) / 1.2, 2)) * ((fx + fy) / (d + 1e-9));
      const double hole = 1 - smoothstep(r - 0.8, r + 0.8, d);
      for (int k = 0; k < 3; ++k) {
        double v = p[k] + 45 * rim;
        v = lerp(v, 22 + 0.15 * p[k], hole);
        p[k] = static_cast<float>(v);
      }
    }
}

// Adds round dots (pores, grains) at random wrapped positions.
void sprinkle(Canvas& c, Rng& rng, int count, double r_min, double r_max, double gain_min,
              double gain_max) {
  const int n = c.width;
  for (int i = 0; i < count; ++i) {
    const double cx = rng.uniform(0, n), cy = rng.uniform(0, n), r = rng.uniform(r_min, r_max);
    const double gain = rng.uniform(gain_min, gain_max);
    const int ext = static_cast<int>(std::ceil(r + 1));
    for (int dy = -ext; dy <= ext; ++dy)
      for (int dx = -ext; dx <= ext; ++dx) {
        const int x = static_cast<int>(std::floor(cx)) + dx, y = static_cast<int>(std::floor(cy)) + dy;
        const double d = std::hypot(x + 0.5 - cx, y + 0.5 - cy);
        const double a = clamp01(r + 0.5 - d);
        if (a <= 0) continue;
        float* p = c.px(wrap_index(x, n), wrap_index(y, n));
        for (int k = 0; k < 3; ++k) p[k] = static_cast<float>(p[k] * lerp(1.0, gain, a));
      }
  }
}

void paint_concrete(Canvas& c, Rng& rng, int variant) {
  const int n = c.width;
  Fbm coarse(4, 4, 6, 0.55, rng), fine(32, 32, 2, 0.5, rng);
  const double base = variant == 0 ? 150 : 136;
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const double v = base + 20 * coarse.at(x, y, n) + 7 * fine.at(x, y, n) + 3 * rng.normal();
      put(c, x, y, v + 1, v, v - 2);
    }
  sprinkle(c, rng, n * n / 400, 0.5, 2.2, 0.45, 0.8);  // air pores
  sprinkle(c, rng, n * n / 600, 0.8, 1.8, 1.08, 1.2);  // light aggregate
}

// Growth rings: a periodic ring function of a noise-warped y, plus fine grain streaks.
void paint_wood(Canvas& c, Rng& rng, int variant) {
  const int n = c.width;
  Fbm warp(2, 3, 3, 0.5, rng), grain(3, 384, 2, 0.5, rng), figure(3, 6, 4, 0.5, rng),
      tone(2, 4, 3, 0.5, rng);
  const int rings = variant == 0 ? 22 : 28;
  const double light[3] = {128, 84, 52}, dark[3] = {62, 36, 22};
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const double r = (y + 36 * warp.at(x, y, n)) / n * rings + 0.35 * figure.at(x, y, n);
      const double f = r - std::floor(r);
      // Late wood: a narrow dark band with a sharp outer edge, as in a flat-sawn board.
      const double late = smoothstep(0.6, 0.93, f) * (1 - smoothstep(0.93, 1.0, f));
      const double g = 0.5 + 0.5 * grain.at(x, y, n);
      const double t = std::clamp(0.55 * late + 0.35 * g + 0.1 * tone.at(x, y, n), 0.0, 1.0);
      const double fleck = 1 + 0.03 * rng.normal();
      put(c, x, y, lerp(light[0], dark[0], t) * fleck, lerp(light[1], dark[1], t) * fleck,
          lerp(light[2], dark[2], t) * fleck);
    }
}

// Plain weave: threads 8 px apart, warp over weft on one checkerboard colour and under on the
// other, each thread rounded in cross-section and slightly different in tone.
void paint_woven_fabric(Canvas& c, Rng& rng, int variant) {
  const int n = c.width, pitch = 8;
  const int n_threads = n / pitch;
  std::vector<double> warp_tone(n_threads), weft_tone(n_threads);
  for (auto& t : warp_tone) t = rng.normal(1.0, 0.035);
  for (auto& t : weft_tone) t = rng.normal(1.0, 0.035);
  Fbm fibre_x(8, 128, 2, 0.5, rng), fibre_y(128, 8, 2, 0.5, rng);
  const double base[3] = {variant == 0 ? 214.0 : 186.0, variant == 0 ? 204.0 : 178.0,
                          variant == 0 ? 184.0 : 160.0};
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const int i = x / pitch, j = y / pitch;
      const double fx = (x % pitch + 0.5) / pitch, fy = (y % pitch + 0.5) / pitch;
      const bool warp_on_top = (i + j) % 2 == 0;
      double shade;
      if (warp_on_top)  // vertical thread: round across x, dipping at its ends along y
        shade = (0.62 + 0.38 * std::sin(kPi * fx)) * (0.86 + 0.14 * std::sin(kPi * fy)) *
                warp_tone[i] * (1 + 0.05 * fibre_x.at(x, y, n));
      else
        shade = (0.62 + 0.38 * std::sin(kPi * fy)) * (0.86 + 0.14 * std::sin(kPi * fx)) *
                weft_tone[j] * (1 + 0.05 * fibre_y.at(x, y, n));
      put(c, x, y, base[0] * shade, base[1] * shade, base[2] * shade);
    }
}

// Pile: dense overlapping tufts (small light and dark dots) over low-frequency wear patches.
void paint_carpet(Canvas& c, Rng& rng, int variant) {
  const int n = c.width;
  Fbm wear(3, 3, 3, 0.5, rng), fine(128, 128, 1, 0.5, rng);
  const double base[3] = {variant == 0 ? 196.0 : 150.0, variant == 0 ? 146.0 : 84.0,
                          variant == 0 ? 96.0 : 48.0};
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const double shade = (1 + 0.1 * wear.at(x, y, n)) * (1 + 0.06 * fine.at(x, y, n));
      put(c, x, y, base[0] * shade, base[1] * shade, base[2] * shade);
    }
  sprinkle(c, rng, n * n / 12, 1.0, 2.4, 0.72, 0.92);  // tuft shadows
  sprinkle(c, rng, n * n / 14, 0.8, 2.0, 1.08, 1.22);  // tuft tips catching light
}

// Square tiles (4 x 4 per texture) with grout lines, a bevel and per-tile tone.
void paint_tiles(Canvas& c, Rng& rng, int variant) {
  const int n = c.width, tile = n / 4;
  const double grout = variant == 0 ? 3.0 : 4.0;
  std::vector<double> tone(16);
  for (auto& t : tone) t = rng.normal(1.0, 0.03);
  Fbm mottle(8, 8, 4, 0.55, rng);
  const double base[3] = {206, 196, 168}, g[3] = {118, 112, 104};
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const int i = x / tile, j = y / tile;
      const double fx = x % tile + 0.5, fy = y % tile + 0.5;
      const double edge = std::min({fx, fy, tile - fx, tile - fy});
      const double in_tile = smoothstep(grout - 0.7, grout + 0.7, edge);
      // Bevel: the tile's rounded edge catches light on its top/left sides.
      const double bevel = (1 - smoothstep(grout, grout + 5, edge)) *
                           (fx < tile / 2.0 && fx <= fy ? 0.08 : (fy < tile / 2.0 ? 0.06 : -0.1));
      const double s = tone[j * 4 + i] * (1 + 0.05 * mottle.at(x, y, n) + bevel);
      double px[3];
      for (int k = 0; k < 3; ++k)
        px[k] = lerp(g[k] * (1 + 0.04 * rng.normal()), base[k] * s + 1.5 * rng.normal(), in_tile);
      put(c, x, y, px[0], px[1], px[2]);
    }
}

void paint_cork(Canvas& c, Rng& rng, int variant) {
  const int n = c.width;
  Fbm granules(64, 64, 3, 0.5, rng), tone(4, 4, 3, 0.5, rng);
  const double base[3] = {variant == 0 ? 206.0 : 190.0, 146, 88};
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const double s = 0.9 + 0.22 * granules.at(x, y, n) + 0.06 * tone.at(x, y, n);
      put(c, x, y, base[0] * s, base[1] * s, base[2] * s);
    }
  sprinkle(c, rng, n * n / 250, 0.6, 2.0, 0.55, 0.8);  // dark grain boundaries
}

struct Generator {
  const char* name;
  Painter paint;
  int variants;
};
constexpr Generator kGenerators[] = {
    {"metal_plate", paint_metal_plate, 2},   {"tread_plate", paint_tread_plate, 2},
    {"perforated_metal", paint_perforated_metal, 2}, {"concrete", paint_concrete, 2},
    {"wood", paint_wood, 2},                 {"woven_fabric", paint_woven_fabric, 2},
    {"carpet", paint_carpet, 2},             {"tiles", paint_tiles, 2},
    {"cork", paint_cork, 2},
};

const Generator& find_generator(std::string_view name) {
  for (const auto& g : kGenerators)
    if (name == g.name) return g;
  throw InputError(fmt::format("no procedural texture generator named '{}'", name));
}

Canvas to_canvas(const Image& img) {
  Canvas c(img.width(), img.height());
  const uint8_t* p = img.u8();
  for (std::size_t i = 0; i < c.rgb.size(); ++i) c.rgb[i] = p[i];
  return c;
}

}  // namespace

const std::vector<CategorySpec>& category_specs() {
  static const std::vector<CategorySpec> specs = make_specs();
  return specs;
}

const CategorySpec& category_spec(std::string_view name) {
  for (const auto& s : category_specs())
    if (s.name == name) return s;
  std::string known;
  for (const auto& s : category_specs()) known += (known.empty() ? "" : ", ") + s.name;
  throw InputError(fmt::format("unknown category '{}' (known: {})", name, known));
}

std::vector<TextureSource> procedural_sources(std::string_view category) {
  const Generator& g = find_generator(category);
  std::vector<TextureSource> out;
  for (int v = 0; v < g.variants; ++v)
    out.push_back({"procedural", fmt::format("{}#{}", g.name, v)});
  return out;
}

fs::path default_texture_dir() {
  if (const char* env = std::getenv("MIRAD_TEXTURES"); env && *env) return env;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    return fs::path(xdg) / "mirad" / "textures";
  if (const char* home = std::getenv("HOME"); home && *home)
    return fs::path(home) / ".cache" / "mirad" / "textures";
  return fs::path(".cache") / "mirad" / "textures";
}

bool textures_available(const CategorySpec& spec, const fs::path& texture_dir) {
  std::error_code ec;
  for (const auto& s : spec.sources)
    if (!fs::is_regular_file(texture_dir / s.package / s.path, ec)) return false;
  return true;
}

Canvas procedural_texture(std::string_view generator, int variant, int size) {
  const Generator& g = find_generator(generator);
  CHECK_INPUT(variant >= 0 && variant < g.variants, "procedural texture {} has no variant {}",
              generator, variant);
  CHECK_INPUT(size >= 64 && size % 64 == 0, "procedural texture size {} is not a multiple of 64",
              size);
  // Painting takes a noticeable fraction of a second and every generate() call paints all
  // categories (as foreign-patch donors), so finished textures are kept for the process.
  static std::mutex mutex;
  static std::map<std::tuple<std::string, int, int>, Canvas> cache;
  const auto key = std::make_tuple(std::string(generator), variant, size);
  {
    std::lock_guard lock(mutex);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  Rng rng(derive_seed(derive_seed(0x5EED7E97u, generator), static_cast<uint64_t>(variant)));
  Canvas c(size, size);
  g.paint(c, rng, variant);
  for (auto& v : c.rgb) v = std::clamp(v, 0.f, 255.f);
  std::lock_guard lock(mutex);
  cache.emplace(key, c);
  return c;
}

std::vector<Texture> load_textures(const CategorySpec& spec,
                                   const std::vector<TextureSource>& sources,
                                   const fs::path& texture_dir, int size) {
  // Source pixels per output pixel; above ~1.5 bilinear sampling would skip source pixels
  // (aliasing), so such sources are shrunk first with the antialiasing resize.
  const double texel = spec.texel_scale * 256.0 / size;
  std::vector<Texture> out;
  for (const auto& src : sources) {
    Texture t;
    t.source = src;
    if (src.package == "procedural") {
      const auto hash = src.path.find('#');
      CHECK_INPUT(hash != std::string::npos, "bad procedural source '{}'", src.path);
      t.pixels = procedural_texture(src.path.substr(0, hash), std::stoi(src.path.substr(hash + 1)));
    } else {
      Image img = decode_image(texture_dir / src.package / src.path);
      if (texel > 1.5) {
        const int w = std::max(16, static_cast<int>(std::lround(img.width() / texel)));
        const int h = std::max(16, static_cast<int>(std::lround(img.height() / texel)));
        t.prescale = static_cast<double>(img.width()) / w;
        img = resize_bilinear(img, h, w);
      }
      t.pixels = to_canvas(img);
    }
    if (src.package == "procedural" && texel > 1.5) {
      Image img(t.pixels.height, t.pixels.width, 3);
      for (std::size_t i = 0; i < t.pixels.rgb.size(); ++i)
        img.u8()[i] = static_cast<uint8_t>(std::lround(t.pixels.rgb[i]));
      const int w = std::max(16, static_cast<int>(std::lround(img.width() / texel)));
      t.prescale = static_cast<double>(img.width()) / w;
      t.pixels = to_canvas(resize_bilinear(img, w, w));
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace mirad::synth
