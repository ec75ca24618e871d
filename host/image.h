// Decoded images (uint8 or float, H x W x C interleaved) and PNG/JPEG decode and PNG encode.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mirad {

class ThreadPool;

enum class PixelType { u8, f32 };
enum class ImageFormat { png, jpeg };

// An H x W x C image, channels interleaved, C in {1, 3}. Float images use the same 0..255 scale
// as uint8 ones, so resize and normalisation treat both alike. Move-only, like Buffer: a copy of
// a large image has to be spelled out with clone().
class Image {
 public:
  Image() = default;
  // Zero-filled; InputError for a non-positive size or C outside {1, 3}.
  Image(int height, int width, int channels, PixelType type = PixelType::u8);
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;
  Image(Image&&) noexcept = default;
  Image& operator=(Image&&) noexcept = default;
  Image clone() const;

  int height() const { return m_height; }
  int width() const { return m_width; }
  int channels() const { return m_channels; }
  PixelType type() const { return m_type; }
  bool empty() const { return m_height == 0; }
  // Number of samples, H * W * C.
  std::size_t numel() const { return static_cast<std::size_t>(m_height) * m_width * m_channels; }

  // Typed access to the samples; each throws if the image holds the other type.
  uint8_t* u8();
  const uint8_t* u8() const;
  float* f32();
  const float* f32() const;
  // One sample as float on the 0..255 scale, whatever the pixel type (tests, slow paths).
  float at(int y, int x, int c) const;

 private:
  int m_height = 0, m_width = 0, m_channels = 0;
  PixelType m_type = PixelType::u8;
  std::vector<uint8_t> m_u8;
  std::vector<float> m_f32;
};

enum class ColorMode {
  rgb,   // 3 channels; gray is replicated, alpha dropped (as PIL's convert("RGB")).
  gray,  // 1 channel; colour becomes ITU-R 601-2 luma (as PIL's convert("L")).
};

enum class HighBitDepth {
  to_u8,     // 16-bit samples are rounded to 8 bits: round(v * 255 / 65535).
  to_float,  // 16-bit samples become float v * 255 / 65535, keeping their precision.
};

// PIL's default decompression-bomb limit: 2^31 / 4 / 3 pixels (a 3-channel image of 4-byte
// samples under 2 GiB). Checked from the header, before anything is allocated.
inline constexpr uint64_t kDefaultMaxPixels = 178956970;

// Largest image file read: above the biggest PNG the default pixel limit allows (16-bit RGBA
// stored without compression, 1.43 GB). Only regular files are read at all.
inline constexpr uint64_t kMaxImageFileBytes = uint64_t(2) << 30;

struct DecodeOptions {
  ColorMode color = ColorMode::rgb;
  HighBitDepth high_bit_depth = HighBitDepth::to_u8;
  uint64_t max_pixels = kDefaultMaxPixels;
  uint64_t max_file_bytes = kMaxImageFileBytes;
};

// What the header says, without decoding the pixels.
struct ImageInfo {
  ImageFormat format = ImageFormat::png;
  int width = 0, height = 0;
  int channels = 0;   // as stored: 1 gray, 2 gray+alpha, 3 RGB/YCbCr/palette, 4 RGBA/CMYK
  int bit_depth = 8;  // per sample as stored (palette: index depth)
};

// Reads only the header for PNG (the first chunk); JPEG headers can sit after large metadata
// segments, so JPEG files are read whole (up to kMaxImageFileBytes). InputError naming the path
// for a path that is not a regular file, anything that is not a readable PNG or JPEG header,
// or a zero-size image.
ImageInfo read_image_info(const std::filesystem::path& path);

// Decodes a PNG or JPEG, recognised by its signature (never the extension). InputError naming
// the file for: a path that is not a regular file (a FIFO, /dev/zero), a file larger than
// options.max_file_bytes, an empty file, an unknown signature, a corrupt or truncated stream,
// a zero-size image, or more than options.max_pixels pixels. 16-bit PNGs give u8 or f32 per
// options.high_bit_depth; everything else gives u8.
Image decode_image(const std::filesystem::path& path, const DecodeOptions& options = {});
// As above, from memory; `name` stands for the file in error messages.
Image decode_image(std::span<const uint8_t> bytes, const DecodeOptions& options,
                   std::string_view name);

// Decodes many files on the pool, keeping the order of `paths`. If any fail, the failure of
// the lowest-index file is rethrown (so the error does not depend on thread timing); files
// after a known failure are skipped. Errors name the file.
std::vector<Image> decode_images(std::span<const std::filesystem::path> paths,
                                 const DecodeOptions& options, ThreadPool& pool);

// Encodes as PNG: u8 images as 8-bit, f32 images as 16-bit (round(v * 65535 / 255), clamped),
// gray or RGB by channel count. The file is written atomically (a unique temp file, then rename);
// `sync` as in write_file_atomic.
std::vector<uint8_t> encode_png(const Image& image);
void encode_png(const std::filesystem::path& path, const Image& image, bool sync = true);

}  // namespace mirad
