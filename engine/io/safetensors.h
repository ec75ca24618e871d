// safetensors files: a strict loader (F32/F16/BF16/F64 -> float32) and an atomic float32 writer,
// used for backbone weights, feature caches and trained models.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mirad {

// One tensor in host memory, always float32 after loading; shape may be empty (a scalar).
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  int64_t numel() const;
};

// The tensors and the optional "__metadata__" (string -> string) of one file. Lookups by a
// name that is absent are InputErrors naming the file and the tensor, since a missing tensor
// is almost always a graph or model that does not belong to this file.
class SafeTensors {
 public:
  SafeTensors() = default;
  SafeTensors(std::string name, std::map<std::string, HostTensor> tensors,
              std::map<std::string, std::string> metadata)
      : m_name(std::move(name)), m_tensors(std::move(tensors)), m_metadata(std::move(metadata)) {}

  // The file it was read from (or the name given to parse_safetensors), for error messages.
  const std::string& name() const { return m_name; }
  const std::map<std::string, HostTensor>& tensors() const { return m_tensors; }
  const std::map<std::string, std::string>& metadata() const { return m_metadata; }
  bool contains(const std::string& tensor) const { return m_tensors.count(tensor) != 0; }
  const HostTensor& at(const std::string& tensor) const;
  // at(), and an InputError unless its shape is exactly `shape`.
  const HostTensor& at(const std::string& tensor, std::span<const int64_t> shape) const;

 private:
  std::string m_name;
  std::map<std::string, HostTensor> m_tensors;
  std::map<std::string, std::string> m_metadata;
};

// The largest JSON header accepted, as the reference implementation's MAX_HEADER_SIZE: about
// 1 million tensor entries. The data section is not capped: it is mapped, not read.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Maps the file (read-only) and parses it. InputError naming the file, and the tensor where
// there is one, for: a path that is not a regular file (FIFOs, devices), a file shorter than 8
// bytes, a header length beyond the file or above kMaxSafetensorsHeaderBytes, a header that is
// not a JSON object (or repeats a name, or nests deeper than kMaxJsonDepth), an entry without
// exactly dtype, shape and data_offsets, a dtype other than F32/F16/BF16/F64 (unknown or
// unsupported: both are named), a negative or overflowing shape, offsets that are reversed, out of
// range, overlapping or leave holes or trailing bytes (the safetensors spec forbids both, against
// polyglot files), and a byte count other than numel x dtype size. Non-string metadata values too.
SafeTensors load_safetensors(const std::filesystem::path& path);
// The same checks on bytes in memory; `name` stands for the file in messages.
SafeTensors parse_safetensors(std::span<const uint8_t> bytes, std::string_view name);

// The file image of `tensors` as float32, names in sorted order, data packed in that order,
// header padded with spaces to a multiple of 8 bytes (as the reference implementation does,
// so that data is aligned). InputError for an empty or reserved ("__metadata__") name, a
// negative dimension, or data whose length is not the product of the shape.
std::vector<uint8_t> serialize_safetensors(const std::map<std::string, HostTensor>& tensors,
                                           const std::map<std::string, std::string>& metadata = {});
// serialize_safetensors, written atomically (a unique temp file, then rename; fsync'ed when `sync`), so
// a reader never sees half a model and a failed write keeps the previous file.
void save_safetensors(const std::filesystem::path& path,
                      const std::map<std::string, HostTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {}, bool sync = true);

}  // namespace mirad
