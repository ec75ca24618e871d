// safetensors loader (mmap + strict validation + dtype conversion) and atomic float32 writer.
#include "engine/io/safetensors.h"

#include <fcntl.h>
#include <fmt/ranges.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"

namespace mirad {

namespace fs = std::filesystem;
using nlohmann::json;

static_assert(std::endian::native == std::endian::little,
              "safetensors is little-endian; a big-endian host would need byte swaps");

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const HostTensor& SafeTensors::at(const std::string& tensor) const {
  auto it = m_tensors.find(tensor);
  CHECK_INPUT(it != m_tensors.end(), "{}: no tensor '{}'", m_name, tensor);
  return it->second;
}

const HostTensor& SafeTensors::at(const std::string& tensor, std::span<const int64_t> shape) const {
  const HostTensor& t = at(tensor);
  CHECK_INPUT(std::equal(t.shape.begin(), t.shape.end(), shape.begin(), shape.end()),
              "{}: tensor '{}' has shape [{}], expected [{}]", m_name, tensor,
              fmt::join(t.shape, ", "), fmt::join(shape, ", "));
  return t;
}

namespace {

enum class DType { f32, f16, bf16, f64 };

int dtype_size(DType d) {
  switch (d) {
    case DType::f32:
      return 4;
    case DType::f16:
      return 2;
    case DType::bf16:
      return 2;
    case DType::f64:
      return 8;
  }
  return 0;
}

// IEEE binary16 -> binary32, exact for every input (subnormals, infinities, NaN payloads).
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal half: shift the mantissa up until its leading 1 becomes the implicit bit.
    exp = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

void convert(DType dtype, const uint8_t* src, int64_t n, float* dst) {
  // A zero-size tensor's dst is an empty vector's null data(); memcpy(nullptr, src, 0) is
  // undefined behaviour (UBSan, found by tests/fuzz/fuzz_safetensors).
  if (n == 0) return;
  // The data section has no alignment guarantee, so every element goes through memcpy.
  switch (dtype) {
    case DType::f32:
      std::memcpy(dst, src, static_cast<std::size_t>(n) * 4);
      break;
    case DType::f16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = half_to_float(h);
      }
      break;
    case DType::bf16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = std::bit_cast<float>(uint32_t(h) << 16);
      }
      break;
    case DType::f64:
      for (int64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        dst[i] = static_cast<float>(d);
      }
      break;
  }
}

DType parse_dtype(const std::string& s, std::string_view file, const std::string& tensor) {
  if (s == "F32") return DType::f32;
  if (s == "F16") return DType::f16;
  if (s == "BF16") return DType::bf16;
  if (s == "F64") return DType::f64;
  // The spec's other dtypes are valid files mirad cannot use; say so rather than "unknown".
  static const std::set<std::string> kOther = {"BOOL",    "U8",      "I8",  "I16",     "U16",
                                               "I32",     "U32",     "I64", "U64",     "F8_E5M2",
                                               "F8_E4M3", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2"};
  CHECK_INPUT(!kOther.count(s),
              "{}: tensor '{}': dtype {} is not supported (mirad reads F32, F16, BF16, F64)", file,
              tensor, s);
  throw InputError(fmt::format("{}: tensor '{}': unknown dtype '{}'", file, tensor, s));
}

// A non-negative JSON integer; floats ("2.0") and negatives are refused, not truncated.
uint64_t json_uint(const json& v, std::string_view file, const std::string& tensor,
                   const char* what) {
  CHECK_INPUT(v.is_number_unsigned(), "{}: tensor '{}': {} must hold non-negative integers, got {}",
              file, tensor, what, json_excerpt(v));
  return v.get<uint64_t>();
}

struct Entry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& name, const json& info, std::string_view file) {
  CHECK_INPUT(info.is_object(), "{}: tensor '{}': header entry is not an object", file, name);
  for (auto it = info.begin(); it != info.end(); ++it)
    CHECK_INPUT(it.key() == "dtype" || it.key() == "shape" || it.key() == "data_offsets",
                "{}: tensor '{}': unknown field '{}' (expected dtype, shape, data_offsets)", file,
                name, it.key());
  for (const char* key : {"dtype", "shape", "data_offsets"})
    CHECK_INPUT(info.contains(key), "{}: tensor '{}': missing '{}'", file, name, key);
  CHECK_INPUT(info["dtype"].is_string(), "{}: tensor '{}': dtype is not a string", file, name);
  Entry e{name, parse_dtype(info["dtype"].get<std::string>(), file, name), {}, 0, 0};

  const json& shape = info["shape"];
  CHECK_INPUT(shape.is_array(), "{}: tensor '{}': shape is not an array", file, name);
  // Bound the element count so that numel x 8 bytes cannot wrap a 64-bit byte count.
  constexpr uint64_t kMaxNumel = uint64_t(1) << 60;
  uint64_t numel = 1;
  for (const json& d : shape) {
    const uint64_t v = json_uint(d, file, name, "shape");
    CHECK_INPUT(v <= kMaxNumel && (v == 0 || numel <= kMaxNumel / v),
                "{}: tensor '{}': shape {} has too many elements", file, name, json_excerpt(shape));
    numel *= v;
    e.shape.push_back(static_cast<int64_t>(v));
  }

  const json& off = info["data_offsets"];
  CHECK_INPUT(off.is_array() && off.size() == 2,
              "{}: tensor '{}': data_offsets must be [begin, end], got {}", file, name,
              json_excerpt(off));
  e.begin = json_uint(off[0], file, name, "data_offsets");
  e.end = json_uint(off[1], file, name, "data_offsets");
  CHECK_INPUT(e.begin <= e.end, "{}: tensor '{}': data_offsets [{}, {}] are reversed", file, name,
              e.begin, e.end);
  const uint64_t want = numel * uint64_t(dtype_size(e.dtype));
  CHECK_INPUT(
      e.end - e.begin == want,
      "{}: tensor '{}': {} bytes in data_offsets [{}, {}], but dtype {} x shape {} needs {}", file,
      name, e.end - e.begin, e.begin, e.end, info["dtype"].get<std::string>(), json_excerpt(shape),
      want);
  return e;
}

// Read-only mapping of a whole file; unmapped on scope exit.
class MappedFile {
 public:
  explicit MappedFile(const fs::path& path) {
    // A regular file only: a FIFO would block the open, and a device such as /dev/zero has
    // no size to map.
    uint64_t size = 0;
    m_fd = open_regular_file(path, &size);
    m_size = static_cast<std::size_t>(size);
    // mmap of length 0 fails; an empty file is simply too short and parse() says so.
    if (m_size > 0) {
      void* p = ::mmap(nullptr, m_size, PROT_READ, MAP_PRIVATE, m_fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(m_fd);  // the destructor does not run for a throwing constructor
        throw InputError(fmt::format("{}: cannot map ({})", path.string(), std::strerror(err)));
      }
      m_data = static_cast<const uint8_t*>(p);
    }
  }
  ~MappedFile() {
    if (m_data) ::munmap(const_cast<uint8_t*>(m_data), m_size);
    if (m_fd >= 0) ::close(m_fd);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::span<const uint8_t> bytes() const { return {m_data, m_size}; }

 private:
  int m_fd = -1;
  const uint8_t* m_data = nullptr;
  std::size_t m_size = 0;
};

}  // namespace

SafeTensors parse_safetensors(std::span<const uint8_t> bytes, std::string_view file) {
  CHECK_INPUT(bytes.size() >= 8,
              "{}: {} bytes is too short for a safetensors file (8-byte header length)", file,
              bytes.size());
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  CHECK_INPUT(header_len <= bytes.size() - 8,
              "{}: header length {} runs beyond the end of the file ({} bytes)", file, header_len,
              bytes.size());
  CHECK_INPUT(header_len <= kMaxSafetensorsHeaderBytes,
              "{}: header length {} is above the limit of {} bytes", file, header_len,
              kMaxSafetensorsHeaderBytes);
  const char* hbegin = reinterpret_cast<const char*>(bytes.data() + 8);
  const char* hend = hbegin + header_len;

  // Depth and repeated keys (a tensor named twice) are checked by the bounded parser, in time
  // linear in the header: nlohmann's callback parser rescans the parent object after every
  // entry, which took minutes on a 200,000-tensor header.
  const json header =
      parse_json_bounded(std::string_view(hbegin, hend - hbegin), fmt::format("{}: header", file));
  CHECK_INPUT(header.is_object(), "{}: header is not a JSON object", file);

  std::map<std::string, std::string> metadata;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      CHECK_INPUT(it.value().is_object(), "{}: __metadata__ is not an object", file);
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        CHECK_INPUT(m.value().is_string(), "{}: __metadata__ value '{}' is not a string", file,
                    m.key());
        metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(it.key(), it.value(), file));
  }

  // Sorted by offset, the tensors must tile the data section exactly: each starts where the
  // previous ended (else they overlap or leave a hole) and the last ends at the file's end.
  const uint64_t data_size = bytes.size() - 8 - header_len;
  std::vector<const Entry*> order;
  for (const Entry& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    CHECK_INPUT(e->end <= data_size,
                "{}: tensor '{}': data_offsets [{}, {}] run beyond the data section ({} bytes)",
                file, e->name, e->begin, e->end, data_size);
    CHECK_INPUT(e->begin >= cursor, "{}: tensor '{}': data_offsets [{}, {}] overlap tensor '{}'",
                file, e->name, e->begin, e->end, prev ? prev->name : "");
    CHECK_INPUT(e->begin == cursor,
                "{}: tensor '{}': data_offsets [{}, {}] leave a hole at [{}, {}]", file, e->name,
                e->begin, e->end, cursor, e->begin);
    cursor = e->end;
    prev = e;
  }
  CHECK_INPUT(cursor == data_size, "{}: {} trailing bytes after the last tensor", file,
              data_size - cursor);

  const uint8_t* data = bytes.data() + 8 + header_len;
  std::map<std::string, HostTensor> tensors;
  for (const Entry& e : entries) {
    HostTensor t;
    t.shape = e.shape;
    t.data.resize(static_cast<std::size_t>(t.numel()));
    convert(e.dtype, data + e.begin, t.numel(), t.data.data());
    tensors.emplace(e.name, std::move(t));
  }
  return SafeTensors(std::string(file), std::move(tensors), std::move(metadata));
}

SafeTensors load_safetensors(const fs::path& path) {
  MappedFile file(path);
  return parse_safetensors(file.bytes(), path.string());
}

std::vector<uint8_t> serialize_safetensors(const std::map<std::string, HostTensor>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    CHECK_INPUT(!name.empty(), "safetensors: empty tensor name");
    CHECK_INPUT(name != "__metadata__",
                "safetensors: '__metadata__' is reserved, not a tensor name");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      CHECK_INPUT(d >= 0, "safetensors: tensor '{}': negative dimension in shape [{}]", name,
                  fmt::join(t.shape, ", "));
      numel *= static_cast<uint64_t>(d);
    }
    CHECK_INPUT(numel == t.data.size(),
                "safetensors: tensor '{}': shape [{}] holds {} values but data has {}", name,
                fmt::join(t.shape, ", "), numel, t.data.size());
    const uint64_t bytes = numel * 4;
    header[name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // Pad to 8 bytes so the data section (and every F32 tensor in it) is 8-aligned when mapped.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  std::vector<uint8_t> out(8 + text.size() + offset);
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  uint8_t* data = out.data() + 8 + text.size();
  for (const auto& [name, t] : tensors) {
    if (t.data.empty()) continue;  // data() may be null: no memcpy (see convert)
    std::memcpy(data, t.data.data(), t.data.size() * 4);
    data += t.data.size() * 4;
  }
  return out;
}

void save_safetensors(const fs::path& path, const std::map<std::string, HostTensor>& tensors,
                      const std::map<std::string, std::string>& metadata, bool sync) {
  const std::vector<uint8_t> bytes = serialize_safetensors(tensors, metadata);
  write_file_atomic(path, bytes, sync);
}

}  // namespace mirad
