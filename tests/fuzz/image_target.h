// The body of fuzz_png and fuzz_jpeg: both go through decode_image (which picks the decoder by
// signature, so either target may wander into the other format) and read_image_info on the same
// bytes as a file; they differ only in their seed corpora.
#pragma once

#include <array>
#include <cstring>
#include <vector>

#include "fuzz_util.h"
#include "host/image.h"

namespace mirad::fuzz {

// libspng rejects a chunk whose CRC-32 is wrong, so random mutations of a PNG would almost never
// get past the first chunk they touch. Rewriting every complete chunk's CRC lets the fuzzer
// reach the decoder proper; inputs whose size is 7 mod 8 keep their CRCs, so the CRC check
// itself is fuzzed too.
inline uint32_t crc32(const uint8_t* p, std::size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

inline void fix_png_crcs(std::vector<uint8_t>& b) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.size() < 8 || std::memcmp(b.data(), sig, 8) != 0 || b.size() % 8 == 7) return;
  std::size_t at = 8;
  while (b.size() - at >= 12) {
    const uint32_t len = uint32_t(b[at]) << 24 | uint32_t(b[at + 1]) << 16 |
                         uint32_t(b[at + 2]) << 8 | b[at + 3];
    if (len > b.size() - at - 12) break;
    const uint32_t crc = crc32(&b[at + 4], 4 + std::size_t(len));
    uint8_t* out = &b[at + 8 + len];
    out[0] = uint8_t(crc >> 24), out[1] = uint8_t(crc >> 16), out[2] = uint8_t(crc >> 8);
    out[3] = uint8_t(crc);
    at += 12 + std::size_t(len);
  }
}

inline int fuzz_image(const uint8_t* data, std::size_t size) {
  const fs::path& dir = setup();
  std::vector<uint8_t> bytes(data, data + size);
  fix_png_crcs(bytes);
  // The input's size picks the options, so every mode is fuzzed without spending input bytes.
  DecodeOptions opt;
  opt.color = (size & 1) ? ColorMode::gray : ColorMode::rgb;
  opt.high_bit_depth = (size & 2) ? HighBitDepth::to_float : HighBitDepth::to_u8;
  // 4 Mpx: the default limit (178 Mpx, 2 GB as float) is by design, but past libFuzzer's memory
  // limit, so it would be reported as an out-of-memory "finding".
  opt.max_pixels = uint64_t(1) << 22;

  int decoded_w = 0, decoded_h = 0;
  expect_only_input_errors([&] {
    const Image img = decode_image(bytes, opt, "fuzz-input");
    require(img.height() > 0 && img.width() > 0, "decoded image has a zero size");
    require(img.channels() == (opt.color == ColorMode::gray ? 1 : 3), "wrong channel count");
    require(uint64_t(img.height()) * uint64_t(img.width()) <= opt.max_pixels,
            "decoded image above max_pixels");
    decoded_w = img.width(), decoded_h = img.height();
  });

  // The header reader takes a path; it must agree with the decoder on any image that decodes.
  const fs::path file = dir / "image";
  write_file(file, as_text(bytes.data(), bytes.size()));
  expect_only_input_errors([&] {
    const ImageInfo info = read_image_info(file);
    require(info.width > 0 && info.height > 0 && info.channels > 0, "header of a zero size");
    if (decoded_w > 0)
      require(info.width == decoded_w && info.height == decoded_h,
              "read_image_info and decode_image disagree on the size");
  });
  if (decoded_w > 0) {
    // ... and the path form of the decoder on the file form.
    const Image again = decode_image(file, opt);
    require(again.width() == decoded_w && again.height() == decoded_h,
            "decode_image(path) differs from decode_image(bytes)");
  }
  return 0;
}

}  // namespace mirad::fuzz
