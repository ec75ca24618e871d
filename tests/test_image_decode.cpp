// Tests for host/image (PNG/JPEG decode, PNG encode, bad-input refusal) and host/thread_pool.
// Every input is generated here: PNGs with libspng's encoder, JPEGs with TurboJPEG.
// Suite names start in lower case so that ctest -R "image|resize|dataset|contamination"
// (a case-sensitive regex) selects them.
#include <gtest/gtest.h>
#include <spng.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "expect_error.h"
#include "core/error.h"
#include "engine/io/file_io.h"
#include "host/image.h"
#include "host/thread_pool.h"

#include "temp_dir.h"
#include "shared_fixtures.h"

namespace fs = std::filesystem;
using namespace mirad;

namespace {

// A fresh directory per test, named for this suite.
class TempDir : public mirad::test::TempDir {
 public:
  TempDir() : mirad::test::TempDir("mirad_image") {}
};

void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// Encodes raw PNG-format samples (host-endian for 16 bit) with libspng.
std::vector<uint8_t> make_png(uint32_t w, uint32_t h, uint8_t color_type, uint8_t depth,
                              const void* data, std::size_t len, const spng_plte* plte = nullptr,
                              const spng_trns* trns = nullptr, bool interlaced = false) {
  spng_ctx* ctx = spng_ctx_new(SPNG_CTX_ENCODER);
  spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
  spng_ihdr ihdr{};
  ihdr.width = w;
  ihdr.height = h;
  ihdr.color_type = color_type;
  ihdr.bit_depth = depth;
  ihdr.interlace_method = interlaced ? SPNG_INTERLACE_ADAM7 : SPNG_INTERLACE_NONE;
  EXPECT_EQ(spng_set_ihdr(ctx, &ihdr), 0);
  if (plte) EXPECT_EQ(spng_set_plte(ctx, const_cast<spng_plte*>(plte)), 0);
  if (trns) EXPECT_EQ(spng_set_trns(ctx, const_cast<spng_trns*>(trns)), 0);
  int rc = spng_encode_image(ctx, data, len, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
  EXPECT_EQ(rc, 0) << spng_strerror(rc);
  std::size_t n = 0;
  int err = 0;
  void* buf = spng_get_png_buffer(ctx, &n, &err);
  std::vector<uint8_t> out(static_cast<uint8_t*>(buf), static_cast<uint8_t*>(buf) + n);
  std::free(buf);
  spng_ctx_free(ctx);
  return out;
}

std::vector<uint8_t> make_jpeg(const std::vector<uint8_t>& px, int w, int h, bool gray,
                               int quality = 100) {
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long n = 0;
  int rc = tjCompress2(tj, px.data(), w, 0, h, gray ? TJPF_GRAY : TJPF_RGB, &buf, &n,
                       gray ? TJSAMP_GRAY : TJSAMP_444, quality, TJFLAG_ACCURATEDCT);
  EXPECT_EQ(rc, 0) << tjGetErrorStr2(tj);
  std::vector<uint8_t> out(buf, buf + n);
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

// The PNG CRC-32 (ISO 3309, reflected, polynomial 0xEDB88320), for hand-made headers.
uint32_t crc32(const uint8_t* p, std::size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

void put_be32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

// Signature + a valid IHDR chunk (correct CRC) claiming w x h 8-bit RGB, and nothing else.
std::vector<uint8_t> png_header_only(uint32_t w, uint32_t h) {
  std::vector<uint8_t> b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  put_be32(b, 13);
  const std::size_t type_at = b.size();
  for (char c : std::string("IHDR")) b.push_back(static_cast<uint8_t>(c));
  put_be32(b, w);
  put_be32(b, h);
  b.insert(b.end(), {8, 2, 0, 0, 0});
  put_be32(b, crc32(b.data() + type_at, b.size() - type_at));
  return b;
}

using mirad::test::expect_input_error;

// PIL's convert("L") on one pixel, the definition the decoder must follow.
int pil_luma(int r, int g, int b) {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
}

constexpr int W = 7, H = 5;  // odd sizes, so row strides are not multiples of anything

uint8_t rgb8(int x, int y, int c) {
  return static_cast<uint8_t>((x * 37 + y * 53 + c * 91) % 256);
}
uint16_t rgb16(int x, int y, int c) {
  return static_cast<uint16_t>((x * 9001 + y * 7919 + c * 12345 + 77) % 65536);
}
int round16to8(int v) {
  return static_cast<int>(std::lround(v * 255.0 / 65535.0));
}

}  // namespace

TEST(imageDecode, Png8BitRgbExact) {
  TempDir dir;
  std::vector<uint8_t> px;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) px.push_back(rgb8(x, y, c));
  const fs::path p = dir / "rgb8.png";
  write_bytes(p, make_png(W, H, SPNG_COLOR_TYPE_TRUECOLOR, 8, px.data(), px.size()));
  Image im = decode_image(p);
  ASSERT_EQ(im.width(), W);
  ASSERT_EQ(im.height(), H);
  ASSERT_EQ(im.channels(), 3);
  ASSERT_EQ(im.type(), PixelType::u8);
  EXPECT_EQ(std::vector<uint8_t>(im.u8(), im.u8() + im.numel()), px);

  // Adam7-interlaced, the same pixels.
  const fs::path pi = dir / "rgb8_interlaced.png";
  std::vector<uint8_t> interlaced = make_png(W, H, SPNG_COLOR_TYPE_TRUECOLOR, 8, px.data(),
                                             px.size(), nullptr, nullptr, /*interlaced=*/true);
  ASSERT_EQ(interlaced[28], 1);  // IHDR interlace method byte: the encoder did interlace
  write_bytes(pi, interlaced);
  EXPECT_EQ(read_image_info(pi).width, W);
  Image il = decode_image(pi);
  EXPECT_EQ(std::vector<uint8_t>(il.u8(), il.u8() + il.numel()), px);

  DecodeOptions gray;
  gray.color = ColorMode::gray;
  Image g = decode_image(p, gray);
  ASSERT_EQ(g.channels(), 1);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      EXPECT_EQ(g.at(y, x, 0), pil_luma(rgb8(x, y, 0), rgb8(x, y, 1), rgb8(x, y, 2)));
}

TEST(imageDecode, LumaMatchesPillow) {
  // Reference values from Pillow 13.0:
  //   Image.new("RGB", (1, 1), c).convert("L").getpixel((0, 0))
  TempDir dir;
  const std::vector<uint8_t> px = {255, 0, 0, 0, 255, 0, 0, 0, 255, 200, 100, 50, 17, 231, 99};
  const fs::path p = dir / "luma.png";
  write_bytes(p, make_png(5, 1, SPNG_COLOR_TYPE_TRUECOLOR, 8, px.data(), px.size()));
  DecodeOptions gray;
  gray.color = ColorMode::gray;
  Image g = decode_image(p, gray);
  const std::vector<uint8_t> pillow = {76, 150, 29, 124, 152};
  EXPECT_EQ(std::vector<uint8_t>(g.u8(), g.u8() + 5), pillow);
}

TEST(imageDecode, Png16BitRgbRoundsAndKeepsFloat) {
  TempDir dir;
  std::vector<uint16_t> px;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) px.push_back(rgb16(x, y, c));
  // Extremes and a rounding tie region: 65535 -> 255, 0 -> 0, 128 -> 0.498 -> 0, 129 -> 1.
  px[0] = 65535;
  px[1] = 0;
  px[2] = 128;
  px[3] = 129;
  const fs::path p = dir / "rgb16.png";
  write_bytes(p, make_png(W, H, SPNG_COLOR_TYPE_TRUECOLOR, 16, px.data(), px.size() * 2));

  Image im = decode_image(p);
  ASSERT_EQ(im.type(), PixelType::u8);
  ASSERT_EQ(im.channels(), 3);
  EXPECT_EQ(im.u8()[0], 255);
  EXPECT_EQ(im.u8()[1], 0);
  EXPECT_EQ(im.u8()[2], 0);
  EXPECT_EQ(im.u8()[3], 1);
  for (std::size_t i = 0; i < px.size(); ++i) EXPECT_EQ(im.u8()[i], round16to8(px[i])) << i;

  DecodeOptions keep;
  keep.high_bit_depth = HighBitDepth::to_float;
  Image f = decode_image(p, keep);
  ASSERT_EQ(f.type(), PixelType::f32);
  for (std::size_t i = 0; i < px.size(); ++i)
    EXPECT_NEAR(f.f32()[i], px[i] * 255.0 / 65535.0, 1e-4) << i;

  // Gray from 16-bit colour: luma at 16-bit precision, then rounded once.
  DecodeOptions gray;
  gray.color = ColorMode::gray;
  Image g = decode_image(p, gray);
  for (int i = 0; i < W * H; ++i) {
    const double luma16 =
        (px[i * 3] * 19595.0 + px[i * 3 + 1] * 38470.0 + px[i * 3 + 2] * 7471.0) / 65536.0;
    EXPECT_NEAR(g.u8()[i], luma16 * 255.0 / 65535.0, 0.51) << i;
  }
}

TEST(imageDecode, PngGrayVariants) {
  TempDir dir;
  // 8-bit gray.
  std::vector<uint8_t> g8;
  for (int i = 0; i < W * H; ++i) g8.push_back(static_cast<uint8_t>(i * 7 % 256));
  write_bytes(dir / "g8.png", make_png(W, H, SPNG_COLOR_TYPE_GRAYSCALE, 8, g8.data(), g8.size()));
  Image rgb = decode_image(dir / "g8.png");
  ASSERT_EQ(rgb.channels(), 3);  // gray replicated, as PIL's convert("RGB")
  DecodeOptions gray;
  gray.color = ColorMode::gray;
  Image g = decode_image(dir / "g8.png", gray);
  ASSERT_EQ(g.channels(), 1);
  for (int i = 0; i < W * H; ++i) {
    EXPECT_EQ(g.u8()[i], g8[i]);
    for (int c = 0; c < 3; ++c) EXPECT_EQ(rgb.u8()[i * 3 + c], g8[i]);
  }

  // 16-bit gray.
  std::vector<uint16_t> g16;
  for (int i = 0; i < W * H; ++i) g16.push_back(static_cast<uint16_t>(i * 1871 + 5));
  write_bytes(dir / "g16.png",
              make_png(W, H, SPNG_COLOR_TYPE_GRAYSCALE, 16, g16.data(), g16.size() * 2));
  Image h = decode_image(dir / "g16.png", gray);
  for (int i = 0; i < W * H; ++i) EXPECT_EQ(h.u8()[i], round16to8(g16[i]));

  // 1-bit gray (binary masks are often stored so): bits must become 0 / 255. Row of 7 pixels
  // 1010011 packed MSB first into one byte, padded.
  std::vector<uint8_t> bits(H, 0b10100110);
  write_bytes(dir / "g1.png", make_png(W, H, SPNG_COLOR_TYPE_GRAYSCALE, 1, bits.data(), H));
  Image b = decode_image(dir / "g1.png", gray);
  const int expect_row[W] = {255, 0, 255, 0, 0, 255, 255};
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) EXPECT_EQ(b.at(y, x, 0), expect_row[x]);
}

TEST(imageDecode, PngGrayAlphaDropsAlpha) {
  TempDir dir;
  std::vector<uint8_t> ga8;
  std::vector<uint16_t> ga16;
  for (int i = 0; i < W * H; ++i) {
    ga8.push_back(static_cast<uint8_t>(i * 11));
    ga8.push_back(static_cast<uint8_t>(i % 2 ? 0 : 255));  // alpha: must not darken anything
    ga16.push_back(static_cast<uint16_t>(i * 1999));
    ga16.push_back(static_cast<uint16_t>(i % 2 ? 0 : 65535));
  }
  write_bytes(dir / "ga8.png",
              make_png(W, H, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, 8, ga8.data(), ga8.size()));
  write_bytes(dir / "ga16.png",
              make_png(W, H, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, 16, ga16.data(), ga16.size() * 2));
  DecodeOptions gray;
  gray.color = ColorMode::gray;
  Image a = decode_image(dir / "ga8.png", gray);
  Image b = decode_image(dir / "ga16.png", gray);
  Image c = decode_image(dir / "ga8.png");
  ASSERT_EQ(a.channels(), 1);
  ASSERT_EQ(c.channels(), 3);
  for (int i = 0; i < W * H; ++i) {
    EXPECT_EQ(a.u8()[i], ga8[i * 2]);
    EXPECT_EQ(b.u8()[i], round16to8(ga16[i * 2]));
    EXPECT_EQ(c.u8()[i * 3 + 1], ga8[i * 2]);
  }
}

TEST(imageDecode, PngRgbaDropsAlpha) {
  TempDir dir;
  std::vector<uint8_t> p8;
  std::vector<uint16_t> p16;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      for (int c = 0; c < 3; ++c) {
        p8.push_back(rgb8(x, y, c));
        p16.push_back(rgb16(x, y, c));
      }
      p8.push_back(static_cast<uint8_t>(x * 40));
      p16.push_back(static_cast<uint16_t>(y * 10000));
    }
  write_bytes(dir / "rgba8.png",
              make_png(W, H, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 8, p8.data(), p8.size()));
  write_bytes(dir / "rgba16.png",
              make_png(W, H, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 16, p16.data(), p16.size() * 2));
  Image a = decode_image(dir / "rgba8.png");
  Image b = decode_image(dir / "rgba16.png");
  ASSERT_EQ(a.channels(), 3);
  ASSERT_EQ(b.channels(), 3);
  for (int i = 0; i < W * H; ++i)
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(a.u8()[i * 3 + c], p8[i * 4 + c]);
      EXPECT_EQ(b.u8()[i * 3 + c], round16to8(p16[i * 4 + c]));
    }
}

TEST(imageDecode, PngPaletteExpands) {
  TempDir dir;
  spng_plte plte{};
  plte.n_entries = 4;
  const uint8_t colors[4][3] = {{10, 20, 30}, {255, 0, 128}, {0, 200, 5}, {99, 98, 97}};
  for (int i = 0; i < 4; ++i) {
    plte.entries[i].red = colors[i][0];
    plte.entries[i].green = colors[i][1];
    plte.entries[i].blue = colors[i][2];
  }
  spng_trns trns{};
  trns.n_type3_entries = 2;
  trns.type3_alpha[0] = 0;  // transparent entry: colour still comes through, alpha dropped
  trns.type3_alpha[1] = 128;
  std::vector<uint8_t> idx;
  for (int i = 0; i < W * H; ++i) idx.push_back(static_cast<uint8_t>(i % 4));
  write_bytes(dir / "pal.png",
              make_png(W, H, SPNG_COLOR_TYPE_INDEXED, 8, idx.data(), idx.size(), &plte, &trns));
  Image im = decode_image(dir / "pal.png");
  ASSERT_EQ(im.channels(), 3);
  DecodeOptions gray;
  gray.color = ColorMode::gray;
  Image g = decode_image(dir / "pal.png", gray);
  for (int i = 0; i < W * H; ++i) {
    const uint8_t* c = colors[i % 4];
    for (int k = 0; k < 3; ++k) EXPECT_EQ(im.u8()[i * 3 + k], c[k]);
    EXPECT_EQ(g.u8()[i], pil_luma(c[0], c[1], c[2]));
  }
  ImageInfo info = read_image_info(dir / "pal.png");
  EXPECT_EQ(info.format, ImageFormat::png);
  EXPECT_EQ(info.width, W);
  EXPECT_EQ(info.height, H);
  EXPECT_EQ(info.channels, 3);
  EXPECT_EQ(info.bit_depth, 8);
}

TEST(imageDecode, JpegColorAndGray) {
  TempDir dir;
  const int w = 33, h = 17;
  std::vector<uint8_t> rgb, gray;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      // Smooth content: JPEG at quality 100, 4:4:4, stays within a few levels of it.
      for (int c = 0; c < 3; ++c) rgb.push_back(static_cast<uint8_t>(40 + x * 4 + y * 3 + c * 20));
      gray.push_back(static_cast<uint8_t>(30 + x * 5 + y * 2));
    }
  // A .png name on JPEG bytes: the signature decides, not the extension.
  write_bytes(dir / "color.png", make_jpeg(rgb, w, h, false));
  write_bytes(dir / "gray.jpg", make_jpeg(gray, w, h, true));

  Image c = decode_image(dir / "color.png");
  ASSERT_EQ(c.width(), w);
  ASSERT_EQ(c.height(), h);
  ASSERT_EQ(c.channels(), 3);
  int worst = 0;
  for (std::size_t i = 0; i < rgb.size(); ++i)
    worst = std::max(worst, std::abs(int{c.u8()[i]} - int{rgb[i]}));
  EXPECT_LE(worst, 3);

  DecodeOptions as_gray;
  as_gray.color = ColorMode::gray;
  Image cg = decode_image(dir / "color.png", as_gray);
  ASSERT_EQ(cg.channels(), 1);
  for (int i = 0; i < w * h; ++i)  // exactly PIL's luma of the decoded RGB
    EXPECT_EQ(cg.u8()[i], pil_luma(c.u8()[i * 3], c.u8()[i * 3 + 1], c.u8()[i * 3 + 2]));

  Image g = decode_image(dir / "gray.jpg", as_gray);
  Image g3 = decode_image(dir / "gray.jpg");
  ASSERT_EQ(g.channels(), 1);
  ASSERT_EQ(g3.channels(), 3);
  worst = 0;
  for (int i = 0; i < w * h; ++i) {
    worst = std::max(worst, std::abs(int{g.u8()[i]} - int{gray[i]}));
    EXPECT_EQ(g3.u8()[i * 3 + 2], g.u8()[i]);
  }
  EXPECT_LE(worst, 2);

  ImageInfo info = read_image_info(dir / "color.png");
  EXPECT_EQ(info.format, ImageFormat::jpeg);
  EXPECT_EQ(info.width, w);
  EXPECT_EQ(info.height, h);
  EXPECT_EQ(info.channels, 3);
}

TEST(imageDecode, RefusesTruncatedFiles) {
  TempDir dir;
  // Noise compresses badly, so half the file cuts deep into the image data.
  std::mt19937 rng(3);
  std::vector<uint8_t> px(64 * 48 * 3);
  for (auto& v : px) v = static_cast<uint8_t>(rng());
  std::vector<uint8_t> png = make_png(64, 48, SPNG_COLOR_TYPE_TRUECOLOR, 8, px.data(), px.size());
  std::vector<uint8_t> jpg = make_jpeg(px, 64, 48, false, 90);
  png.resize(png.size() / 2);
  jpg.resize(jpg.size() / 2);
  const fs::path tp = dir / "cut.png", tj = dir / "cut.jpg", th = dir / "cut_header.png";
  write_bytes(tp, png);
  write_bytes(tj, jpg);
  write_bytes(th, std::vector<uint8_t>(png.begin(), png.begin() + 20));
  expect_input_error([&] { decode_image(tp); }, tp.string(), "truncated");
  expect_input_error([&] { decode_image(tj); }, tj.string(), "truncated");
  expect_input_error([&] { decode_image(th); }, th.string(), "truncated");
  expect_input_error([&] { read_image_info(th); }, th.string(), "truncated");
}

TEST(imageDecode, RefusesNonImagesAndEmptyFiles) {
  TempDir dir;
  std::mt19937 rng(5);
  std::vector<uint8_t> noise(1000);
  for (auto& v : noise) v = static_cast<uint8_t>(rng());
  noise[0] = 'x';  // make sure the noise does not start with a signature by chance
  const fs::path r = dir / "noise.png", e = dir / "empty.png", t = dir / "text.jpg";
  write_bytes(r, noise);
  write_bytes(e, {});
  write_bytes(t, std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o'});
  expect_input_error([&] { decode_image(r); }, r.string(), "not an image");
  expect_input_error([&] { decode_image(t); }, t.string(), "not an image");
  expect_input_error([&] { decode_image(e); }, e.string(), "empty file");
  expect_input_error([&] { read_image_info(e); }, e.string(), "empty file");
  expect_input_error([&] { read_image_info(r); }, r.string(), "not an image");
  const fs::path missing = dir / "missing.png";
  expect_input_error([&] { decode_image(missing); }, missing.string(), "cannot open");
  expect_input_error([&] { decode_image(dir.path()); }, dir.path().string(), "directory");
}

TEST(imageDecode, RefusesBombsBeforeAllocating) {
  TempDir dir;
  // 100000 x 100000 RGB would be 30 GB; the header alone must be enough to refuse it.
  const fs::path bomb = dir / "bomb.png";
  write_bytes(bomb, png_header_only(100000, 100000));
  expect_input_error([&] { decode_image(bomb); }, bomb.string(), "decompression bomb");
  // The header itself is fine, so its size can still be read.
  ImageInfo info = read_image_info(bomb);
  EXPECT_EQ(info.width, 100000);
  EXPECT_EQ(info.height, 100000);

  // The limit is configurable and applies to JPEG too: 33 x 17 = 561 pixels.
  std::vector<uint8_t> px(33 * 17 * 3, 128);
  const fs::path small = dir / "small.jpg";
  write_bytes(small, make_jpeg(px, 33, 17, false));
  DecodeOptions strict;
  strict.max_pixels = 560;
  expect_input_error([&] { decode_image(small, strict); }, small.string(), "above the limit");
  strict.max_pixels = 561;
  EXPECT_EQ(decode_image(small, strict).width(), 33);
}

TEST(imageDecode, RefusesZeroSize) {
  TempDir dir;
  const fs::path z = dir / "zero.png";
  write_bytes(z, png_header_only(0, 10));
  expect_input_error([&] { decode_image(z); }, z.string(), "zero-size");
  expect_input_error([&] { read_image_info(z); }, z.string(), "zero-size");
}

TEST(imageEncode, RoundTripsAndWritesAtomically) {
  TempDir dir;
  Image rgb(H, W, 3), gray(H, W, 1), f(H, W, 1, PixelType::f32);
  for (std::size_t i = 0; i < rgb.numel(); ++i) rgb.u8()[i] = static_cast<uint8_t>(i * 13);
  for (std::size_t i = 0; i < gray.numel(); ++i) gray.u8()[i] = static_cast<uint8_t>(i * 29);
  for (std::size_t i = 0; i < f.numel(); ++i) f.f32()[i] = static_cast<float>(i) * 7.123f;
  f.f32()[0] = -3.0f;   // clamped to 0
  f.f32()[1] = 300.0f;  // clamped to 255
  encode_png(dir / "rgb.png", rgb);
  encode_png(dir / "gray.png", gray);
  encode_png(dir / "f.png", f);
  EXPECT_FALSE(mirad::test::has_atomic_write_leftovers(dir.path()));

  Image a = decode_image(dir / "rgb.png");
  EXPECT_EQ(std::vector<uint8_t>(a.u8(), a.u8() + a.numel()),
            std::vector<uint8_t>(rgb.u8(), rgb.u8() + rgb.numel()));
  DecodeOptions gray_opt;
  gray_opt.color = ColorMode::gray;
  Image b = decode_image(dir / "gray.png", gray_opt);
  EXPECT_EQ(std::vector<uint8_t>(b.u8(), b.u8() + b.numel()),
            std::vector<uint8_t>(gray.u8(), gray.u8() + gray.numel()));
  ImageInfo info = read_image_info(dir / "f.png");
  EXPECT_EQ(info.bit_depth, 16);
  EXPECT_EQ(info.channels, 1);
  gray_opt.high_bit_depth = HighBitDepth::to_float;
  Image c = decode_image(dir / "f.png", gray_opt);
  ASSERT_EQ(c.type(), PixelType::f32);
  EXPECT_EQ(c.f32()[0], 0.0f);
  EXPECT_EQ(c.f32()[1], 255.0f);
  for (std::size_t i = 2; i < f.numel(); ++i)  // 16-bit keeps 1/257 of a level
    EXPECT_NEAR(c.f32()[i], f.f32()[i], 0.5 * 255.0 / 65535.0 + 1e-5) << i;

  // Overwriting replaces the file whole.
  encode_png(dir / "rgb.png", gray);
  EXPECT_EQ(read_image_info(dir / "rgb.png").channels, 1);
}

TEST(imageDecode, DecodesInMemory) {
  std::vector<uint8_t> px = {1, 2, 3, 4, 5, 6};
  std::vector<uint8_t> png = make_png(2, 1, SPNG_COLOR_TYPE_TRUECOLOR, 8, px.data(), px.size());
  Image im = decode_image(png, {}, "memory.png");
  EXPECT_EQ(im.at(0, 1, 2), 6.0f);
  std::vector<uint8_t> junk = {'G', 'I', 'F', '8', '9', 'a'};
  expect_input_error([&] { decode_image(junk, {}, "upload#7"); }, "upload#7", "not an image");
}

TEST(imageThreadPool, RunsTasksAndPropagatesExceptions) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.size(), 3);
  auto f = pool.submit([] { return 6 * 7; });
  EXPECT_EQ(f.get(), 42);
  auto bad = pool.submit([]() -> int { throw std::runtime_error("boom"); });
  EXPECT_THROW(bad.get(), std::runtime_error);

  std::vector<int> out(1000, 0);
  pool.parallel_for(out.size(), [&](std::size_t i) { out[i] = static_cast<int>(i) * 2; });
  for (std::size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], static_cast<int>(i) * 2);

  // Several failures: the lowest index wins, whatever finished first.
  std::atomic<int> ran{0};
  try {
    pool.parallel_for(50, [&](std::size_t i) {
      ++ran;
      if (i == 31 || i == 7 || i == 44) throw InputError("item " + std::to_string(i));
    });
    FAIL() << "no exception";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "item 7");
  }
  EXPECT_EQ(ran.load(), 50);  // every task ran before the rethrow
}

TEST(imageThreadPool, DestructorFinishesQueuedWork) {
  std::atomic<int> done{0};
  {
    ThreadPool pool(2);
    for (int i = 0; i < 100; ++i) pool.submit([&] { ++done; });
  }
  EXPECT_EQ(done.load(), 100);
}

TEST(imageDecode, ParallelDecodeKeepsOrderAndNamesTheBadFile) {
  TempDir dir;
  std::vector<fs::path> paths;
  for (int k = 0; k < 12; ++k) {
    std::vector<uint8_t> px(static_cast<std::size_t>(k + 1) * 3, static_cast<uint8_t>(k * 10));
    paths.push_back(dir / ("img" + std::to_string(k) + ".png"));
    write_bytes(paths.back(), make_png(static_cast<uint32_t>(k + 1), 1, SPNG_COLOR_TYPE_TRUECOLOR,
                                       8, px.data(), px.size()));
  }
  ThreadPool pool(4);
  std::vector<Image> images = decode_images(paths, {}, pool);
  ASSERT_EQ(images.size(), paths.size());
  for (int k = 0; k < 12; ++k) {
    EXPECT_EQ(images[k].width(), k + 1);
    EXPECT_EQ(images[k].at(0, 0, 0), k * 10);
  }

  write_bytes(paths[9], {});
  write_bytes(paths[4], {'n', 'o', 'p', 'e'});
  expect_input_error([&] { decode_images(paths, {}, pool); }, paths[4].string(), "not an image");
}

TEST(imageDecode, SharedFixturesMatchPillow) {
  const fs::path dir = mirad::test::imagenet_photos_dir();
  if (!fs::exists(dir / "chelsea.png"))
    GTEST_SKIP() << "no shared fixtures at " << dir << " (set MIRAD_SHARED)";
  // Reference: Pillow 13.0, np.asarray(Image.open(f).convert("RGB" or "L")), summed as int64.
  struct Ref {
    const char* file;
    int w, h;
    long long rgb_sum, gray_sum;
    uint8_t px00[3], mid[3];
  };
  const Ref refs[] = {
      {"chelsea.png", 451, 300, 46802357, 16166008, {143, 120, 104}, {190, 150, 124}},
      {"coffee.png", 600, 400, 71003487, 24875976, {21, 13, 8}, {248, 250, 255}},
      {"rocket.jpg", 640, 427, 53516744, 16662617, {17, 33, 58}, {132, 123, 114}},
  };
  for (const Ref& r : refs) {
    Image im = decode_image(dir / r.file);
    ASSERT_EQ(im.width(), r.w) << r.file;
    ASSERT_EQ(im.height(), r.h) << r.file;
    long long sum = 0;
    for (std::size_t i = 0; i < im.numel(); ++i) sum += im.u8()[i];
    EXPECT_EQ(sum, r.rgb_sum) << r.file;
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(im.at(0, 0, c), r.px00[c]) << r.file;
      EXPECT_EQ(im.at(r.h / 2, r.w / 2, c), r.mid[c]) << r.file;
    }
    DecodeOptions gray;
    gray.color = ColorMode::gray;
    Image g = decode_image(dir / r.file, gray);
    long long gsum = 0;
    for (std::size_t i = 0; i < g.numel(); ++i) gsum += g.u8()[i];
    EXPECT_EQ(gsum, r.gray_sum) << r.file;
  }
}
