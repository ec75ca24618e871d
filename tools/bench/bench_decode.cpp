// Decode + resize + normalise throughput (images/s) for PNG (libspng) and JPEG
// (libjpeg-turbo) at a typical inspection size (512x512 RGB -> 224x224), on one thread and on
// the decode pool.
#include <benchmark/benchmark.h>
#include <turbojpeg.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "host/image.h"
#include "host/resize.h"
#include "host/thread_pool.h"

using namespace mirad;
namespace fs = std::filesystem;

namespace {

constexpr int kImages = 32, kSide = 512;

// A textured image (smooth waves plus noise), so that PNG and JPEG sizes are realistic.
Image make_image(int seed) {
  Image img(kSide, kSide, 3);
  std::mt19937 rng(seed);
  for (int y = 0; y < kSide; ++y)
    for (int x = 0; x < kSide; ++x)
      for (int c = 0; c < 3; ++c) {
        double v = 128 + 60 * std::sin(0.05 * x + seed + c) * std::cos(0.03 * y) + int(rng() % 21) - 10;
        img.u8()[(int64_t(y) * kSide + x) * 3 + c] = uint8_t(std::clamp(v, 0.0, 255.0));
      }
  return img;
}

const std::vector<fs::path>& files(bool jpeg) {
  static std::vector<fs::path> png_files, jpg_files;
  auto& v = jpeg ? jpg_files : png_files;
  if (!v.empty()) return v;
  const fs::path dir = fs::temp_directory_path() / "mirad_bench_decode";
  fs::create_directories(dir);
  tjhandle tj = tjInitCompress();
  for (int i = 0; i < kImages; ++i) {
    Image img = make_image(i);
    fs::path p = dir / (std::to_string(i) + (jpeg ? ".jpg" : ".png"));
    if (!jpeg) {
      encode_png(p, img, false);
    } else {
      unsigned char* buf = nullptr;
      unsigned long size = 0;
      tjCompress2(tj, img.u8(), kSide, 0, kSide, TJPF_RGB, &buf, &size, TJSAMP_420, 90, 0);
      std::ofstream(p, std::ios::binary).write(reinterpret_cast<char*>(buf), size);
      tjFree(buf);
    }
    v.push_back(p);
  }
  tjDestroy(tj);
  return v;
}

void decode_one(const fs::path& p, const PreprocessOptions& pre, float* out) {
  Image img = decode_image(p);
  auto x = preprocess(img, pre);
  std::copy(x.begin(), x.end(), out);
}

void BM_DecodeResize(benchmark::State& state, bool jpeg) {
  const auto& f = files(jpeg);
  const int threads = int(state.range(0));
  ThreadPool pool(threads);
  PreprocessOptions pre;  // 224x224, ImageNet normalisation
  std::vector<float> out(size_t(kImages) * 3 * 224 * 224);
  for (auto _ : state) {
    pool.parallel_for(f.size(), [&](size_t i) { decode_one(f[i], pre, out.data() + i * 3 * 224 * 224); });
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * int64_t(f.size()));
  state.counters["images/s"] =
      benchmark::Counter(double(state.iterations()) * f.size(), benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK_CAPTURE(BM_DecodeResize, png_512_to_224, false)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_DecodeResize, jpeg_512_to_224, true)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
