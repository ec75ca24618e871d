// PNG decode/encode through libspng, JPEG decode through TurboJPEG, and the Image container.
#include "host/image.h"

#include <spng.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "host/thread_pool.h"

namespace mirad {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Image

Image::Image(int height, int width, int channels, PixelType type)
    : m_height(height), m_width(width), m_channels(channels), m_type(type) {
  CHECK_INPUT(height > 0 && width > 0, "image size must be positive, got {}x{}", width, height);
  CHECK_INPUT(channels == 1 || channels == 3, "image channels must be 1 or 3, got {}", channels);
  if (type == PixelType::u8)
    m_u8.assign(numel(), 0);
  else
    m_f32.assign(numel(), 0.0f);
}

Image Image::clone() const {
  Image out;
  out.m_height = m_height;
  out.m_width = m_width;
  out.m_channels = m_channels;
  out.m_type = m_type;
  out.m_u8 = m_u8;
  out.m_f32 = m_f32;
  return out;
}

uint8_t* Image::u8() {
  CHECK_THROW(m_type == PixelType::u8);
  return m_u8.data();
}
const uint8_t* Image::u8() const {
  CHECK_THROW(m_type == PixelType::u8);
  return m_u8.data();
}
float* Image::f32() {
  CHECK_THROW(m_type == PixelType::f32);
  return m_f32.data();
}
const float* Image::f32() const {
  CHECK_THROW(m_type == PixelType::f32);
  return m_f32.data();
}

float Image::at(int y, int x, int c) const {
  CHECK_THROW(y >= 0 && y < m_height && x >= 0 && x < m_width && c >= 0 && c < m_channels);
  std::size_t i = (static_cast<std::size_t>(y) * m_width + x) * m_channels + c;
  return m_type == PixelType::u8 ? static_cast<float>(m_u8[i]) : m_f32[i];
}

namespace {

// ---------------------------------------------------------------------------------------------
// Sample conversions shared by the PNG and JPEG paths

// PIL's convert("L"): ITU-R 601-2 luma in 16-bit fixed point. The weights sum to 65536, so a
// gray pixel (v, v, v) maps back to exactly v.
inline uint32_t luma_fixed(uint32_t r, uint32_t g, uint32_t b) {
  return static_cast<uint32_t>(
      (uint64_t{r} * 19595 + uint64_t{g} * 38470 + uint64_t{b} * 7471 + 0x8000) >> 16);
}

// 16-bit to 8-bit with rounding; the common v >> 8 maps 65535 right but is biased low by half
// a step everywhere else.
inline uint8_t u16_to_u8(uint32_t v) {
  return static_cast<uint8_t>((v * 255 + 32767) / 65535);
}
inline float u16_to_f32(uint32_t v) {
  return static_cast<float>(v * (255.0 / 65535.0));
}

bool has_png_signature(std::span<const uint8_t> b) {
  static constexpr uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return b.size() >= 8 && std::memcmp(b.data(), sig, 8) == 0;
}
bool has_jpeg_signature(std::span<const uint8_t> b) {
  return b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF;
}

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

void check_size(std::string_view name, uint64_t width, uint64_t height, uint64_t max_pixels) {
  CHECK_INPUT(width > 0 && height > 0, "{}: zero-size image ({}x{})", name, width, height);
  // Both factors are below 2^32, so the product cannot overflow 64 bits.
  CHECK_INPUT(width * height <= max_pixels,
              "{}: image is {}x{} = {} pixels, above the limit of {} pixels per image "
              "(possible decompression bomb; no mirad option raises it: downscale the image)",
              name, width, height, width * height, max_pixels);
}

// ---------------------------------------------------------------------------------------------
// PNG

struct SpngFree {
  void operator()(spng_ctx* ctx) const { spng_ctx_free(ctx); }
};
using SpngCtx = std::unique_ptr<spng_ctx, SpngFree>;

// Generous for metadata (iCCP, text) but bounds what a hostile ancillary chunk can allocate.
constexpr std::size_t kPngChunkLimit = std::size_t{64} << 20;

int png_channels(uint8_t color_type) {
  switch (color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE:
      return 1;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA:
      return 2;
    case SPNG_COLOR_TYPE_TRUECOLOR:
      return 3;
    case SPNG_COLOR_TYPE_INDEXED:
      return 3;
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA:
      return 4;
    default:
      return 0;
  }
}

// The IHDR chunk always starts at byte 8 with a fixed 13-byte body. Reading width and height
// ourselves, before libspng does anything, gives precise messages for a zero-size image and a
// bomb check that provably runs before any allocation.
void precheck_png_header(std::span<const uint8_t> b, std::string_view name, uint64_t max_pixels) {
  CHECK_INPUT(b.size() >= 33, "{}: truncated PNG ({} bytes, the header alone needs 33)", name,
              b.size());
  CHECK_INPUT(read_be32(b.data() + 8) == 13 && std::memcmp(b.data() + 12, "IHDR", 4) == 0,
              "{}: corrupt PNG (the first chunk is not a 13-byte IHDR)", name);
  check_size(name, read_be32(b.data() + 16), read_be32(b.data() + 20), max_pixels);
}

Image decode_png(std::span<const uint8_t> b, const DecodeOptions& opt, std::string_view name) {
  precheck_png_header(b, name, opt.max_pixels);
  SpngCtx ctx(spng_ctx_new(0));
  CHECK_THROW(ctx != nullptr);
  spng_set_chunk_limits(ctx.get(), kPngChunkLimit, kPngChunkLimit);
  spng_set_png_buffer(ctx.get(), b.data(), b.size());
  spng_ihdr ihdr{};
  int rc = spng_get_ihdr(ctx.get(), &ihdr);
  CHECK_INPUT(rc == 0, "{}: corrupt PNG header ({})", name, spng_strerror(rc));

  const int width = static_cast<int>(ihdr.width), height = static_cast<int>(ihdr.height);
  const std::size_t n_pixels = static_cast<std::size_t>(width) * height;
  const bool gray_out = opt.color == ColorMode::gray;
  const int out_c = gray_out ? 1 : 3;
  const bool gray_src = ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE ||
                        ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA;

  // Decodes into a vector of T sized by libspng for the requested format.
  auto decode = [&]<typename T>(int fmt, std::vector<T>& out) {
    std::size_t len = 0;
    int r = spng_decoded_image_size(ctx.get(), fmt, &len);
    CHECK_INPUT(r == 0, "{}: unsupported PNG ({})", name, spng_strerror(r));
    CHECK_THROW(len % sizeof(T) == 0);
    out.resize(len / sizeof(T));
    // No SPNG_DECODE_TRNS / GAMMA: alpha is dropped and gamma ignored, as PIL's convert does.
    r = spng_decode_image(ctx.get(), out.data(), len, fmt, 0);
    CHECK_INPUT(r == 0, "{}: corrupt or truncated PNG ({})", name, spng_strerror(r));
  };

  if (ihdr.bit_depth == 16) {
    // libspng's own 16 -> 8 conversion truncates; take 16-bit samples (host-endian) and round
    // them ourselves.
    std::vector<uint16_t> px;
    decode(SPNG_FMT_RGBA16, px);
    CHECK_THROW(px.size() == n_pixels * 4);
    const bool to_float = opt.high_bit_depth == HighBitDepth::to_float;
    Image img(height, width, out_c, to_float ? PixelType::f32 : PixelType::u8);
    float* out_f = to_float ? img.f32() : nullptr;
    uint8_t* out_u = to_float ? nullptr : img.u8();
    auto put = [&](std::size_t at, uint32_t v) {
      if (to_float)
        out_f[at] = u16_to_f32(v);
      else
        out_u[at] = u16_to_u8(v);
    };
    for (std::size_t i = 0; i < n_pixels; ++i) {
      const uint16_t* p = &px[i * 4];
      if (gray_out) {
        put(i, gray_src ? p[0] : luma_fixed(p[0], p[1], p[2]));
      } else {
        for (int c = 0; c < 3; ++c) put(i * 3 + c, p[c]);
      }
    }
    return img;
  }

  Image img(height, width, out_c, PixelType::u8);
  if (gray_out && ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE) {
    // Plain gray (any depth <= 8, scaled to 0..255 by libspng) needs no conversion.
    std::vector<uint8_t> raw;
    decode(SPNG_FMT_G8, raw);
    CHECK_THROW(raw.size() == n_pixels);
    std::memcpy(img.u8(), raw.data(), n_pixels);
    return img;
  }
  // RGB8 covers every colour type: gray is replicated, palettes are expanded, alpha dropped.
  std::vector<uint8_t> raw;
  decode(SPNG_FMT_RGB8, raw);
  CHECK_THROW(raw.size() == n_pixels * 3);
  if (!gray_out) {
    std::memcpy(img.u8(), raw.data(), raw.size());
  } else {
    for (std::size_t i = 0; i < n_pixels; ++i)
      img.u8()[i] = static_cast<uint8_t>(luma_fixed(raw[i * 3], raw[i * 3 + 1], raw[i * 3 + 2]));
  }
  return img;
}

// ---------------------------------------------------------------------------------------------
// JPEG (TurboJPEG 2.x API; libjpeg-turbo 3 keeps it, so this builds against both)

struct TjFree {
  void operator()(void* h) const { tjDestroy(h); }
};
using TjHandle = std::unique_ptr<void, TjFree>;

struct JpegHeader {
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
};

JpegHeader read_jpeg_header(tjhandle h, std::span<const uint8_t> b, std::string_view name) {
  JpegHeader hd;
  int rc = tjDecompressHeader3(h, b.data(), static_cast<unsigned long>(b.size()), &hd.width,
                               &hd.height, &hd.subsamp, &hd.colorspace);
  CHECK_INPUT(rc == 0, "{}: corrupt or truncated JPEG header ({})", name, tjGetErrorStr2(h));
  return hd;
}

Image decode_jpeg(std::span<const uint8_t> b, const DecodeOptions& opt, std::string_view name) {
  TjHandle handle(tjInitDecompress());
  CHECK_THROW(handle != nullptr);
  tjhandle h = handle.get();
  JpegHeader hd = read_jpeg_header(h, b, name);
  check_size(name, static_cast<uint64_t>(hd.width), static_cast<uint64_t>(hd.height),
             opt.max_pixels);
  // TurboJPEG cannot colour-convert CMYK, and Adobe's inverted-CMYK convention makes a naive
  // conversion wrong more often than right.
  CHECK_INPUT(hd.colorspace != TJCS_CMYK && hd.colorspace != TJCS_YCCK,
              "{}: CMYK/YCCK JPEG is not supported; convert it to RGB first", name);

  const bool gray_out = opt.color == ColorMode::gray;
  const bool gray_src = hd.colorspace == TJCS_GRAY;
  // A colour JPEG asked for as gray is decoded to RGB and converted with PIL's luma, so that
  // the result matches PIL's convert("L") rather than the slightly different Y plane.
  const int decode_c = (gray_out && gray_src) ? 1 : 3;
  Image decoded(hd.height, hd.width, decode_c, PixelType::u8);
  // STOPONWARNING: a truncated stream is only a warning to libjpeg, which pads the missing
  // rows with gray; we refuse it instead. Default DCT/upsampling match PIL's decoder.
  int rc = tjDecompress2(h, b.data(), static_cast<unsigned long>(b.size()), decoded.u8(), hd.width,
                         0, hd.height, decode_c == 1 ? TJPF_GRAY : TJPF_RGB, TJFLAG_STOPONWARNING);
  CHECK_INPUT(rc == 0, "{}: corrupt or truncated JPEG ({})", name, tjGetErrorStr2(h));
  if (!gray_out || decode_c == 1) return decoded;

  Image img(hd.height, hd.width, 1, PixelType::u8);
  const std::size_t n = static_cast<std::size_t>(hd.width) * hd.height;
  const uint8_t* s = decoded.u8();
  for (std::size_t i = 0; i < n; ++i)
    img.u8()[i] = static_cast<uint8_t>(luma_fixed(s[i * 3], s[i * 3 + 1], s[i * 3 + 2]));
  return img;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public entry points

Image decode_image(std::span<const uint8_t> bytes, const DecodeOptions& options,
                   std::string_view name) {
  CHECK_INPUT(!bytes.empty(), "{}: empty file", name);
  if (has_png_signature(bytes)) return decode_png(bytes, options, name);
  if (has_jpeg_signature(bytes)) return decode_jpeg(bytes, options, name);
  throw InputError(
      fmt::format("{}: not an image (no PNG or JPEG signature in its first bytes)", name));
}

Image decode_image(const fs::path& path, const DecodeOptions& options) {
  std::vector<uint8_t> bytes = read_file_bytes(path, options.max_file_bytes);
  return decode_image(bytes, options, path.string());
}

ImageInfo read_image_info(const fs::path& path) {
  const std::string name = path.string();
  // A regular file only (a FIFO would block, a device never end); the open cannot block.
  int fd = -1;
  try {
    fd = open_regular_file(path);
  } catch (const InputError& e) {
    throw InputError(fmt::format("{} (not a readable file)", e.what()));
  }
  uint8_t head[33];
  std::size_t got = 0;
  while (got < sizeof head) {
    const ssize_t n = ::read(fd, head + got, sizeof head - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw InputError(fmt::format("{}: read failed ({})", name, std::strerror(err)));
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  std::span<const uint8_t> hb(head, got);
  CHECK_INPUT(got > 0, "{}: empty file", name);

  ImageInfo info;
  if (has_png_signature(hb)) {
    // No pixel limit here: the caller wants the size, whatever it is.
    precheck_png_header(hb, name, std::numeric_limits<uint64_t>::max());
    info.format = ImageFormat::png;
    info.width = static_cast<int>(read_be32(head + 16));
    info.height = static_cast<int>(read_be32(head + 20));
    info.bit_depth = head[24];
    info.channels = png_channels(head[25]);
    CHECK_INPUT(info.width > 0 && info.height > 0 && info.channels > 0,
                "{}: corrupt PNG header (size {}x{}, colour type {})", name, read_be32(head + 16),
                read_be32(head + 20), int{head[25]});
    return info;
  }
  if (has_jpeg_signature(hb)) {
    std::vector<uint8_t> bytes = read_file_bytes(path, kMaxImageFileBytes);
    TjHandle handle(tjInitDecompress());
    CHECK_THROW(handle != nullptr);
    JpegHeader hd = read_jpeg_header(handle.get(), bytes, name);
    check_size(name, static_cast<uint64_t>(hd.width), static_cast<uint64_t>(hd.height),
               std::numeric_limits<uint64_t>::max());
    info.format = ImageFormat::jpeg;
    info.width = hd.width;
    info.height = hd.height;
    info.channels = hd.colorspace == TJCS_GRAY                                   ? 1
                    : (hd.colorspace == TJCS_CMYK || hd.colorspace == TJCS_YCCK) ? 4
                                                                                 : 3;
    return info;
  }
  throw InputError(
      fmt::format("{}: not an image (no PNG or JPEG signature in its first bytes)", name));
}

std::vector<Image> decode_images(std::span<const fs::path> paths, const DecodeOptions& options,
                                 ThreadPool& pool) {
  std::vector<Image> images(paths.size());
  // Lowest index known to have failed; files after it are skipped since their result is
  // discarded anyway, while files before it still run so that the reported error is always
  // that of the first bad file in the list.
  std::atomic<std::size_t> first_failure{paths.size()};
  auto note_failure = [&](std::size_t i) {
    std::size_t cur = first_failure.load();
    while (i < cur && !first_failure.compare_exchange_weak(cur, i)) {
    }
  };
  pool.parallel_for(paths.size(), [&](std::size_t i) {
    if (i > first_failure.load(std::memory_order_relaxed)) return;
    try {
      images[i] = decode_image(paths[i], options);
    } catch (const InputError&) {
      note_failure(i);
      throw;  // already names the file
    } catch (const std::exception& e) {
      note_failure(i);
      // bad_alloc and internal errors do not know which file they came from.
      throw std::runtime_error(fmt::format("{}: {}", paths[i].string(), e.what()));
    }
  });
  return images;
}

std::vector<uint8_t> encode_png(const Image& image) {
  CHECK_INPUT(!image.empty(), "encode_png: empty image");
  const bool sixteen = image.type() == PixelType::f32;
  const std::size_t n = image.numel();
  std::vector<uint8_t> samples;
  if (!sixteen) {
    samples.assign(image.u8(), image.u8() + n);
  } else {
    // libspng takes SPNG_FMT_PNG input in host byte order and swaps to big-endian itself.
    std::vector<uint16_t> s16(n);
    const float* src = image.f32();
    for (std::size_t i = 0; i < n; ++i) {
      double v = std::clamp(static_cast<double>(src[i]) * (65535.0 / 255.0), 0.0, 65535.0);
      s16[i] = static_cast<uint16_t>(v + 0.5);
    }
    samples.resize(n * 2);
    std::memcpy(samples.data(), s16.data(), samples.size());
  }

  SpngCtx ctx(spng_ctx_new(SPNG_CTX_ENCODER));
  CHECK_THROW(ctx != nullptr);
  spng_set_option(ctx.get(), SPNG_ENCODE_TO_BUFFER, 1);
  spng_ihdr ihdr{};
  ihdr.width = static_cast<uint32_t>(image.width());
  ihdr.height = static_cast<uint32_t>(image.height());
  ihdr.bit_depth = sixteen ? 16 : 8;
  ihdr.color_type = image.channels() == 1 ? SPNG_COLOR_TYPE_GRAYSCALE : SPNG_COLOR_TYPE_TRUECOLOR;
  int rc = spng_set_ihdr(ctx.get(), &ihdr);
  CHECK_INPUT(rc == 0, "encode_png: {}", spng_strerror(rc));
  rc = spng_encode_image(ctx.get(), samples.data(), samples.size(), SPNG_FMT_PNG,
                         SPNG_ENCODE_FINALIZE);
  CHECK_INPUT(rc == 0, "encode_png: {}", spng_strerror(rc));
  std::size_t len = 0;
  int err = 0;
  void* buf = spng_get_png_buffer(ctx.get(), &len, &err);
  CHECK_INPUT(buf != nullptr && err == 0, "encode_png: {}", spng_strerror(err));
  std::vector<uint8_t> out(static_cast<uint8_t*>(buf), static_cast<uint8_t*>(buf) + len);
  std::free(buf);  // libspng hands the buffer over, allocated with malloc
  return out;
}

void encode_png(const fs::path& path, const Image& image, bool sync) {
  std::vector<uint8_t> bytes;
  try {
    bytes = encode_png(image);
  } catch (const InputError& e) {
    throw InputError(fmt::format("{}: {}", path.string(), e.what()));
  }
  write_file_atomic(path, bytes, sync);
}

}  // namespace mirad
