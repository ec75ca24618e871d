// safetensors: writer/loader round trip, dtype conversion (F16, BF16, F64 -> F32), and every
// malformed case the loader must refuse with an InputError naming the file and the tensor.
// Suite names start with "safetensors" so that ctest -R safetensors selects them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "temp_dir.h"
#include "core/error.h"
#include "engine/io/safetensors.h"

namespace fs = std::filesystem;

namespace mirad {
namespace {

// A file image: 8-byte little-endian header length, the header text, the data.
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data,
                               uint64_t header_len_override = 0) {
  std::vector<uint8_t> out(8 + header.size() + data.size());
  const uint64_t n = header_len_override ? header_len_override : header.size();
  std::memcpy(out.data(), &n, 8);
  std::copy(header.begin(), header.end(), out.begin() + 8);
  std::copy(data.begin(), data.end(), out.begin() + 8 + header.size());
  return out;
}

template <typename T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// The InputError message of parsing `bytes`, or "" if it parsed.
std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    parse_safetensors(bytes, "bad.safetensors");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

class safetensors_files : public ::testing::Test {
 protected:
  void SetUp() override {
    m_dir = fs::temp_directory_path() /
            ("mirad_safetensors_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(m_dir);
  }
  void TearDown() override { fs::remove_all(m_dir); }
  fs::path m_dir;
};

TEST_F(safetensors_files, RoundTripKeepsShapesDataAndMetadata) {
  std::map<std::string, HostTensor> t;
  t["conv.weight"] = {{4, 3, 3, 3}, {}};
  for (int i = 0; i < 108; ++i) t["conv.weight"].data.push_back(0.25f * i - 7.f);
  t["bias"] = {{4}, {1.f, -2.f, std::numeric_limits<float>::infinity(), 1e-40f}};
  t["scalar"] = {{}, {3.5f}};
  t["empty"] = {{0, 5}, {}};
  const std::map<std::string, std::string> meta = {{"backbone", "mobilenet_v2"}, {"tap", "20"}};
  const fs::path file = m_dir / "model.safetensors";
  save_safetensors(file, t, meta);
  EXPECT_FALSE(mirad::test::has_atomic_write_leftovers(m_dir));

  const SafeTensors st = load_safetensors(file);
  EXPECT_EQ(st.name(), file.string());
  EXPECT_EQ(st.metadata(), meta);
  ASSERT_EQ(st.tensors().size(), t.size());
  for (const auto& [name, want] : t) {
    const HostTensor& got = st.at(name);
    EXPECT_EQ(got.shape, want.shape) << name;
    ASSERT_EQ(got.data.size(), want.data.size()) << name;
    for (std::size_t i = 0; i < want.data.size(); ++i)
      EXPECT_EQ(std::bit_cast<uint32_t>(got.data[i]), std::bit_cast<uint32_t>(want.data[i]))
          << name << "[" << i << "] must round-trip bit-exactly";
  }
  const int64_t shape[] = {4};
  EXPECT_NO_THROW(st.at("bias", shape));

  // The data section starts 8-aligned, as the reference writer pads the header.
  std::ifstream in(file, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ((8 + n) % 8, 0u);

  // Overwriting replaces the file whole.
  t.erase("empty");
  save_safetensors(file, t, {}, /*sync=*/false);
  EXPECT_EQ(load_safetensors(file).tensors().size(), 3u);
  EXPECT_TRUE(load_safetensors(file).metadata().empty());
}

TEST_F(safetensors_files, MissingFileAndDirectoryNameThePath) {
  try {
    load_safetensors(m_dir / "nope.safetensors");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("nope.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_safetensors(m_dir), InputError);
  // An empty file is too short, not a mapping failure.
  std::ofstream(m_dir / "empty.safetensors").close();
  try {
    load_safetensors(m_dir / "empty.safetensors");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("too short"), std::string::npos) << e.what();
  }
}

TEST(safetensors, ConvertsF16Bf16F64ToF32) {
  // F16: 1, -2, 65504 (max), 2^-24 (smallest subnormal), -0, inf.
  const std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7c00};
  // BF16: the top halves of 1.5f and -3.25f.
  const std::vector<uint16_t> bf16 = {static_cast<uint16_t>(std::bit_cast<uint32_t>(1.5f) >> 16),
                                      static_cast<uint16_t>(std::bit_cast<uint32_t>(-3.25f) >> 16)};
  const std::vector<double> f64 = {0.1, -1e10, 3.0};
  std::vector<uint8_t> data = bytes_of(f16);
  const auto b = bytes_of(bf16), d = bytes_of(f64);
  data.insert(data.end(), b.begin(), b.end());
  data.insert(data.end(), d.begin(), d.end());
  const std::string header = R"({"h": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]},)"
                             R"( "b": {"dtype": "BF16", "shape": [2], "data_offsets": [12, 16]},)"
                             R"( "d": {"dtype": "F64", "shape": [3], "data_offsets": [16, 40]}})";
  const SafeTensors st = parse_safetensors(make_file(header, data), "mixed.safetensors");
  const auto& h = st.at("h").data;
  EXPECT_EQ(h[0], 1.f);
  EXPECT_EQ(h[1], -2.f);
  EXPECT_EQ(h[2], 65504.f);
  EXPECT_EQ(h[3], std::ldexp(1.f, -24));
  EXPECT_TRUE(h[4] == 0.f && std::signbit(h[4]));
  EXPECT_TRUE(std::isinf(h[5]));
  EXPECT_EQ(st.at("b").data, (std::vector<float>{1.5f, -3.25f}));
  EXPECT_EQ(st.at("d").data, (std::vector<float>{0.1f, -1e10f, 3.f}));
  EXPECT_EQ(st.at("h").shape, (std::vector<int64_t>{2, 3}));
}

struct Malformed {
  const char* name;
  std::vector<uint8_t> bytes;
  const char* must_mention;  // a fragment the message must contain
};

void PrintTo(const Malformed& m, std::ostream* os) {
  *os << m.name;
}

std::vector<Malformed> malformed_cases() {
  const std::vector<uint8_t> d16(16, 0), d8(8, 0);
  auto entry = [](const std::string& name, const std::string& body) {
    return "\"" + name + "\": {" + body + "}";
  };
  const std::string ok_a = entry("a", R"("dtype": "F32", "shape": [2], "data_offsets": [0, 8])");
  std::vector<Malformed> v = {
      {"empty", {}, "too short"},
      {"five_bytes", {1, 2, 3, 4, 5}, "too short"},
      {"header_length_beyond_file", make_file("{" + ok_a + "}", d8, 4096), "beyond the end"},
      {"header_length_huge", make_file("{}", {}, ~uint64_t(0)), "beyond the end"},
      {"truncated_header", make_file("{" + ok_a, d8), "not valid JSON"},
      {"bad_json", make_file("{\"a\": [1, 2,, 3]}", {}), "not valid JSON"},
      {"header_not_object", make_file("[1, 2]", {}), "not a JSON object"},
      {"entry_not_object", make_file(R"({"a": 3})", {}), "'a'"},
      {"unknown_dtype",
       make_file("{" + entry("w", R"("dtype": "F33", "shape": [2], "data_offsets": [0, 8])") + "}",
                 d8),
       "unknown dtype 'F33'"},
      {"unsupported_dtype",
       make_file("{" + entry("w", R"("dtype": "I32", "shape": [2], "data_offsets": [0, 8])") + "}",
                 d8),
       "I32 is not supported"},
      {"dtype_not_string",
       make_file("{" + entry("w", R"("dtype": 1, "shape": [2], "data_offsets": [0, 8])") + "}", d8),
       "dtype is not a string"},
      {"missing_shape",
       make_file("{" + entry("w", R"("dtype": "F32", "data_offsets": [0, 8])") + "}", d8),
       "missing 'shape'"},
      {"unknown_field",
       make_file(
           "{" +
               entry("w",
                     R"("dtype": "F32", "shape": [2], "data_offsets": [0, 8], "strides": [1])") +
               "}",
           d8),
       "unknown field 'strides'"},
      {"negative_dim",
       make_file("{" + entry("w", R"("dtype": "F32", "shape": [-2], "data_offsets": [0, 8])") + "}",
                 d8),
       "non-negative integers"},
      {"float_dim",
       make_file(
           "{" + entry("w", R"("dtype": "F32", "shape": [2.0], "data_offsets": [0, 8])") + "}", d8),
       "non-negative integers"},
      {"overflowing_shape",
       make_file(
           "{" +
               entry(
                   "w",
                   R"("dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8])") +
               "}",
           d8),
       "too many elements"},
      {"offsets_not_pair",
       make_file("{" + entry("w", R"("dtype": "F32", "shape": [2], "data_offsets": [0])") + "}",
                 d8),
       "[begin, end]"},
      {"offsets_reversed",
       make_file("{" + entry("w", R"("dtype": "F32", "shape": [0], "data_offsets": [8, 0])") + "}",
                 d8),
       "reversed"},
      {"size_mismatch",
       make_file("{" + entry("w", R"("dtype": "F32", "shape": [3], "data_offsets": [0, 8])") + "}",
                 d8),
       "needs 12"},
      {"size_mismatch_f16",
       make_file("{" + entry("w", R"("dtype": "F16", "shape": [2], "data_offsets": [0, 8])") + "}",
                 d8),
       "needs 4"},
      {"offsets_out_of_range",
       make_file("{" + entry("w", R"("dtype": "F32", "shape": [4], "data_offsets": [0, 16])") + "}",
                 d8),
       "beyond the data section"},
      {"overlapping",
       make_file("{" + ok_a + ", " +
                     entry("b", R"("dtype": "F32", "shape": [2], "data_offsets": [4, 12])") + "}",
                 d16),
       "overlap tensor 'a'"},
      {"identical_ranges",
       make_file("{" + ok_a + ", " +
                     entry("b", R"("dtype": "F32", "shape": [2], "data_offsets": [0, 8])") + "}",
                 d16),
       "overlap"},
      {"hole",
       make_file("{" + entry("b", R"("dtype": "F32", "shape": [2], "data_offsets": [8, 16])") + "}",
                 d16),
       "hole"},
      {"trailing_bytes", make_file("{" + ok_a + "}", d16), "8 trailing bytes"},
      {"duplicate_name",
       make_file("{" + ok_a + ", " +
                     entry("a", R"("dtype": "F32", "shape": [2], "data_offsets": [8, 16])") + "}",
                 d16),
       "'a' appears twice"},
      {"metadata_not_string", make_file(R"({"__metadata__": {"epoch": 3}})", {}),
       "'epoch' is not a string"},
  };
  return v;
}

class safetensors_malformed : public ::testing::TestWithParam<Malformed> {};

TEST_P(safetensors_malformed, IsAnInputErrorNamingFileAndProblem) {
  const Malformed& m = GetParam();
  const std::string msg = parse_error(m.bytes);
  ASSERT_FALSE(msg.empty()) << m.name << " parsed without error";
  EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find(m.must_mention), std::string::npos) << "message: " << msg;
}

INSTANTIATE_TEST_SUITE_P(Cases, safetensors_malformed, ::testing::ValuesIn(malformed_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(safetensors, ErrorsNameTheTensor) {
  const std::string header =
      R"({"layer3.weight": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})";
  const std::string msg = parse_error(make_file(header, std::vector<uint8_t>(8)));
  EXPECT_NE(msg.find("tensor 'layer3.weight'"), std::string::npos) << msg;

  const SafeTensors st("w.safetensors", {{"x", HostTensor{{2, 2}, {1, 2, 3, 4}}}}, {});
  try {
    st.at("y");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "w.safetensors: no tensor 'y'");
  }
  const int64_t wrong[] = {4};
  try {
    st.at("x", wrong);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "w.safetensors: tensor 'x' has shape [2, 2], expected [4]");
  }
}

TEST(safetensors, WriterRefusesInconsistentTensors) {
  EXPECT_THROW(serialize_safetensors({{"a", HostTensor{{2, 3}, {1, 2, 3}}}}), InputError);
  EXPECT_THROW(serialize_safetensors({{"__metadata__", HostTensor{{1}, {1}}}}), InputError);
  EXPECT_THROW(serialize_safetensors({{"", HostTensor{{1}, {1}}}}), InputError);
  EXPECT_THROW(serialize_safetensors({{"a", HostTensor{{-1}, {}}}}), InputError);
  // What it writes, it reads back (no file involved).
  const auto bytes = serialize_safetensors({{"a", HostTensor{{1, 2}, {5, 6}}}}, {{"k", "v"}});
  const SafeTensors st = parse_safetensors(bytes, "mem");
  EXPECT_EQ(st.at("a").data, (std::vector<float>{5, 6}));
  EXPECT_EQ(st.metadata().at("k"), "v");
}

TEST(safetensors, HeaderWithTrailingSpacesAndNoTensors) {
  // The reference writer pads the header with spaces; an empty file (no tensors) is valid.
  const SafeTensors st = parse_safetensors(make_file("{}      ", {}), "empty.safetensors");
  EXPECT_TRUE(st.tensors().empty());
}

}  // namespace
}  // namespace mirad
