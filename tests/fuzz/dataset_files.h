// The image files the dataset targets lay out: small valid PNGs and a JPEG encoded once per
// process, and a garbage file, by a one-letter kind.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "host/image.h"

#include <turbojpeg.h>

namespace mirad::fuzz {

// p: 8x6 RGB PNG; s: 3x2 RGB PNG (a size mismatch with p); m: 8x6 gray mask with a defect;
// z: 8x6 all-zero mask (KSDD2: a good image); j: 8x6 RGB JPEG; g: bytes that are no image;
// e: an empty file.
inline const std::string& file_bytes(char kind) {
  static const std::map<char, std::string> files = [] {
    auto png = [](int h, int w, int c, int value) {
      Image img(h, w, c);
      for (std::size_t i = 0; i < img.numel(); ++i) img.u8()[i] = uint8_t((i * 37 + value) % 256);
      if (value == 0) std::fill(img.u8(), img.u8() + img.numel(), uint8_t(0));
      const auto b = encode_png(img);
      return std::string(b.begin(), b.end());
    };
    std::map<char, std::string> f;
    f['p'] = png(6, 8, 3, 1);
    {
      // mirad only decodes JPEG; TurboJPEG (which it links) encodes this one.
      std::vector<uint8_t> rgb(8 * 6 * 3);
      for (std::size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i * 11);
      tjhandle h = tjInitCompress();
      unsigned char* out = nullptr;
      unsigned long len = 0;
      const int rc = tjCompress2(h, rgb.data(), 8, 0, 6, TJPF_RGB, &out, &len, TJSAMP_420, 90, 0);
      require(rc == 0, "tjCompress2 failed");
      f['j'] = std::string(reinterpret_cast<const char*>(out), len);
      tjFree(out);
      tjDestroy(h);
    }
    f['s'] = png(2, 3, 3, 1);
    f['m'] = png(6, 8, 1, 5);
    f['z'] = png(6, 8, 1, 0);
    f['g'] = "not an image at all\n";
    f['e'] = "";
    return f;
  }();
  static const std::string none;
  const auto it = files.find(kind);
  return it == files.end() ? none : it->second;
}

}  // namespace mirad::fuzz
