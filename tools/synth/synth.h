// Benchmark generator: MVTec-AD-layout categories built from photographed textures (Debian's
// ufoai-textures and mypaint-data-extras) or procedural ones, with synthetic defects and masks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/image.h"
#include "tools/synth/synth_random.h"

namespace mirad {

class ThreadPool;

namespace synth {

// The defect classes, in the order they are generated and shown on contact sheets. Their
// names are the MVTec folder names: scratch, crack, stain, foreign_patch, hole.
enum class DefectType { scratch, crack, stain, foreign_patch, hole };
inline constexpr int kNumDefectTypes = 5;
const char* defect_name(DefectType type);
// InputError for an unknown name.
DefectType parse_defect(std::string_view name);
std::span<const DefectType> all_defect_types();

// Allowed mask area, as a fraction of the image area. Every generated defect is redrawn with
// fresh parameters until its mask lies in this range, so the range is a guarantee, not a hope.
struct AreaRange {
  double min_fraction, max_fraction;
};
AreaRange defect_area_range(DefectType type);

// One source texture: a file inside a Debian package as tools/textures/fetch_textures.sh
// unpacks it (`<textures>/<package>/<path>`), or a procedural generator ("procedural", path =
// "<generator>#<variant>").
struct TextureSource {
  std::string package;
  std::string path;
};

// A category: which textures it is cut from and how good images vary.
struct CategorySpec {
  std::string name;
  std::string description;
  std::vector<TextureSource> sources;
  // Source pixels per output pixel at output size 256 (other sizes keep the same field of
  // view). Picked per texture family so that the structure (tread lugs, tiles, threads) has a
  // plausible size in the frame.
  double texel_scale = 1.0;
  double max_rotation_deg = 6.0;  // rotation jitter of good images, +-
  double scale_jitter = 0.08;     // relative zoom jitter, +-
  // Scales every defect's contrast. Near-uniform surfaces (a white canvas) show any defect
  // far more plainly than busy ones at the same physical severity; this evens them out.
  double defect_contrast = 1.0;
};

// The built-in categories, real-texture sources listed; procedural_sources() gives the
// fallback for the same category.
const std::vector<CategorySpec>& category_specs();
const CategorySpec& category_spec(std::string_view name);  // InputError for an unknown name
std::vector<TextureSource> procedural_sources(std::string_view category);

// Default texture cache: $MIRAD_TEXTURES, else ${XDG_CACHE_HOME:-$HOME/.cache}/mirad/textures
// (what fetch_textures.sh fills).
std::filesystem::path default_texture_dir();

// A float RGB image on the 0..255 scale, interleaved; the generator's working format.
struct Canvas {
  int width = 0, height = 0;
  std::vector<float> rgb;
  Canvas() = default;
  Canvas(int w, int h) : width(w), height(h), rgb(static_cast<std::size_t>(w) * h * 3, 0.f) {}
  float* px(int x, int y) { return rgb.data() + (static_cast<std::size_t>(y) * width + x) * 3; }
  const float* px(int x, int y) const {
    return rgb.data() + (static_cast<std::size_t>(y) * width + x) * 3;
  }
};

// A loaded (and, where it is much larger than needed, pre-shrunk) source texture. Sampling
// wraps around: the sources are tileable game/painting textures, so any offset is seamless.
struct Texture {
  TextureSource source;
  Canvas pixels;
  double prescale = 1.0;  // source pixels per pixel of `pixels`
};

// Loads one category's sources for output size `size`: decoded and shrunk by an integer-ish
// factor when the category's texel scale would otherwise sample them sparsely (aliasing).
// InputError naming the file if one is missing or undecodable.
std::vector<Texture> load_textures(const CategorySpec& spec,
                                   const std::vector<TextureSource>& sources,
                                   const std::filesystem::path& texture_dir, int size);
// True when every real source of the category exists under texture_dir.
bool textures_available(const CategorySpec& spec, const std::filesystem::path& texture_dir);

// A procedural tileable texture (the fallback): generator = a category name, variant 0..n.
Canvas procedural_texture(std::string_view generator, int variant, int size = 512);

// Everything needed to render a category's images.
struct CategoryContext {
  const CategorySpec* spec = nullptr;
  std::vector<Texture> textures;         // the category's own sources
  std::vector<const Texture*> donors;    // other categories' textures, for foreign patches
  int size = 256;
  bool procedural = false;
};

// One generated image (RGB u8) with its mask (gray u8, 0/255; all zero for good images) and
// the parameters that made it.
struct Sample {
  Image image;
  Image mask;
  nlohmann::json params;
};

// Renders one image, deterministically from `seed`. defect = nullptr for a good image.
Sample render_sample(const CategoryContext& ctx, const DefectType* defect, uint64_t seed);

struct SynthOptions {
  std::filesystem::path out;
  std::vector<std::string> categories;  // empty = all built-in
  int n_train = 100;
  int n_test_good = 20;
  int n_test_defect = 10;  // per defect type
  int size = 256;
  uint64_t seed = 0;
  std::filesystem::path textures;  // empty = default_texture_dir(); else must be a folder
  bool procedural = false;         // force the procedural fallback for every category
  bool contact_sheet = false;
};

struct CategoryResult {
  std::string name;
  std::filesystem::path dir;
  bool procedural = false;
  std::vector<TextureSource> sources;
  int n_train = 0, n_test_good = 0, n_test_defect = 0;
  double seconds = 0;
};

struct SynthSummary {
  std::vector<CategoryResult> categories;
  std::vector<std::string> warnings;  // e.g. the automatic procedural fallback
};

// Rejects bad options with an InputError that names the option (counts, size, categories,
// output folder).
void validate_options(const SynthOptions& opt);

// Called after each written image: (images done, images total, category). Called from the
// pool's threads, one call at a time.
using ProgressFn = std::function<void(int64_t, int64_t, const std::string&)>;

// Writes <out>/<category>/{train/good, test/good, test/<defect>, ground_truth/<defect>} and
// <out>/<category>/synth.json (seed, sources with their packages, every image's parameters),
// each file atomically. Output is byte-identical for the same options and sources, whatever
// the thread count. A category folder left by an earlier run (it has synth.json) is replaced;
// any other non-empty folder in the way is an error.
SynthSummary generate(const SynthOptions& opt, ThreadPool& pool, const ProgressFn& progress = {});

// A grid on one PNG, from a category folder on disk (any MVTec-layout category): first row
// good test images, then one row per defect type (in all_defect_types() order, types without
// images skipped), each defect shown twice side by side: as is, and with its mask outline in
// red. `per_row` images per row (defect rows hold per_row/2 pairs).
Image make_contact_sheet(const std::filesystem::path& category_dir, int per_row = 6);
void write_contact_sheet(const std::filesystem::path& category_dir, int per_row = 6);

}  // namespace synth
}  // namespace mirad
