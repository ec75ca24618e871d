// BatchStreamer: ring buffers, streams and events of the decode -> copy -> compute pipeline.
#include "host/batch_streamer.h"

#include <future>
#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "core/nvtx.h"
#include "host/thread_pool.h"
#ifdef MIRAD_HAVE_CUDA
#include "core/cuda_error.h"
#endif

namespace mirad {

struct BatchStreamer::Impl {
  int64_t image_numel = 0;
  StreamerOptions opt;
  ThreadPool* pool = nullptr;
  std::vector<PinnedBuffer<float>> host;
  std::vector<Buffer<float>> device;
#ifdef MIRAD_HAVE_CUDA
  cudaStream_t copy = nullptr, compute = nullptr;
  // copy_done[s]: host slot s may be overwritten; compute_done[s]: device slot s may be.
  std::vector<cudaEvent_t> copy_done, compute_done;
#endif

  ~Impl() {
#ifdef MIRAD_HAVE_CUDA
    for (auto e : copy_done) CUDA_CHECK_PRINT(cudaEventDestroy(e));
    for (auto e : compute_done) CUDA_CHECK_PRINT(cudaEventDestroy(e));
    if (copy) CUDA_CHECK_PRINT(cudaStreamDestroy(copy));
    if (compute) CUDA_CHECK_PRINT(cudaStreamDestroy(compute));
#endif
  }
  bool on_cuda() const { return opt.device == Device::cuda; }
};

BatchStreamer::BatchStreamer(int64_t image_numel, const StreamerOptions& options,
                             ThreadPool& pool)
    : m(std::make_unique<Impl>()) {
  CHECK_INPUT(image_numel > 0, "batch streamer: image size must be positive");
  CHECK_INPUT(options.batch_size > 0, "batch streamer: batch size must be positive (got {})",
              options.batch_size);
  CHECK_INPUT(options.ring_slots >= 1 && options.ring_slots <= 64,
              "batch streamer: ring_slots must be in [1, 64] (got {})", options.ring_slots);
  m->image_numel = image_numel;
  m->opt = options;
  m->pool = &pool;
  const size_t slot_floats = size_t(image_numel) * size_t(options.batch_size);
  for (int s = 0; s < options.ring_slots; ++s) m->host.emplace_back(slot_floats);
  if (m->on_cuda()) {
#ifdef MIRAD_HAVE_CUDA
    CHECK_INPUT(cuda_available(), "batch streamer: CUDA requested but no device is available");
    CUDA_CHECK_THROW(cudaStreamCreateWithFlags(&m->copy, cudaStreamNonBlocking));
    CUDA_CHECK_THROW(cudaStreamCreateWithFlags(&m->compute, cudaStreamNonBlocking));
    for (int s = 0; s < options.ring_slots; ++s) {
      m->device.emplace_back(slot_floats, Device::cuda);
      // Each event joins its vector as soon as it exists, so ~Impl frees it if a later
      // creation throws.
      cudaEvent_t e = nullptr;
      CUDA_CHECK_THROW(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      m->copy_done.push_back(e);
      CUDA_CHECK_THROW(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      m->compute_done.push_back(e);
    }
#else
    throw InputError("batch streamer: CUDA requested but this build has no CUDA backend");
#endif
  }
}

BatchStreamer::~BatchStreamer() = default;

bool BatchStreamer::pinned() const {
  for (const auto& h : m->host)
    if (!h.pinned()) return false;
  return true;
}

Stream BatchStreamer::compute_stream() const {
#ifdef MIRAD_HAVE_CUDA
  return Stream{m->compute};
#else
  return Stream{};
#endif
}

void BatchStreamer::run(int64_t n_images, const PrepareImage& prepare,
                        const ConsumeBatch& consume,
                        const std::function<void(int64_t)>& on_batch) {
  CHECK_INPUT(n_images >= 0, "batch streamer: negative image count");
  if (n_images == 0) return;
  const int64_t B = m->opt.batch_size, R = m->opt.ring_slots;
  const int64_t n_batches = (n_images + B - 1) / B;
  auto count_of = [&](int64_t b) { return std::min(B, n_images - b * B); };

  // Decodes batch b into its host slot; runs on a helper thread so the caller can queue the
  // previous batch meanwhile, and fans out over the pool.
  auto prepare_batch = [&](int64_t b) {
    return std::async(std::launch::async, [&, b] {
      NVTX_RANGE("decode");
      const int64_t slot = b % R;
#ifdef MIRAD_HAVE_CUDA
      // The slot's previous H2D copy must have read it before we overwrite it.
      if (m->on_cuda()) CUDA_CHECK_THROW(cudaEventSynchronize(m->copy_done[slot]));
#endif
      float* dst = m->host[slot].data();
      m->pool->parallel_for(size_t(count_of(b)), [&](size_t i) {
        prepare(b * B + int64_t(i), dst + i * m->image_numel);
      });
    });
  };

  // With one slot there is nothing to overlap: prepare and consume strictly alternate.
  std::future<void> next = prepare_batch(0);
  for (int64_t b = 0; b < n_batches; ++b) {
    next.get();  // rethrows a decode error, naming the file
    const int64_t slot = b % R, count = count_of(b);
    if (b + 1 < n_batches && R > 1) next = prepare_batch(b + 1);
    if (!m->on_cuda()) {
      NVTX_RANGE("consume");
      consume(b * B, count, m->host[slot].data(), Stream{});
    } else {
#ifdef MIRAD_HAVE_CUDA
      {
        NVTX_RANGE("copy");
        // The device slot is free once the compute that last read it is done.
        CUDA_CHECK_THROW(cudaStreamWaitEvent(m->copy, m->compute_done[slot], 0));
        CUDA_CHECK_THROW(cudaMemcpyAsync(m->device[slot].data(), m->host[slot].data(),
                                         sizeof(float) * count * m->image_numel,
                                         cudaMemcpyHostToDevice, m->copy));
        CUDA_CHECK_THROW(cudaEventRecord(m->copy_done[slot], m->copy));
      }
      NVTX_RANGE("backbone");
      CUDA_CHECK_THROW(cudaStreamWaitEvent(m->compute, m->copy_done[slot], 0));
      consume(b * B, count, m->device[slot].data(), Stream{m->compute});
      CUDA_CHECK_THROW(cudaEventRecord(m->compute_done[slot], m->compute));
#endif
    }
    if (b + 1 < n_batches && R == 1) next = prepare_batch(b + 1);
    if (on_batch) on_batch(std::min(n_images, (b + 1) * B));
  }
#ifdef MIRAD_HAVE_CUDA
  if (m->on_cuda()) CUDA_CHECK_THROW(cudaStreamSynchronize(m->compute));
#endif
}

}  // namespace mirad
