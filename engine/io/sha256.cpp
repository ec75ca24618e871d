// SHA-256 through OpenSSL's EVP interface, streamed in 1 MiB chunks.
#include "engine/io/sha256.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "core/error.h"
#include "engine/io/file_io.h"

namespace mirad {

namespace {

struct Digest {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
  Digest() {
    CHECK_THROW(ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1);
  }
  void update(const void* p, size_t n) { CHECK_THROW(EVP_DigestUpdate(ctx.get(), p, n) == 1); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    CHECK_THROW(EVP_DigestFinal_ex(ctx.get(), md, &len) == 1);
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < len; ++i) s += digits[md[i] >> 4], s += digits[md[i] & 15];
    return s;
  }
};

}  // namespace

std::string sha256_hex(std::span<const uint8_t> bytes) {
  Digest d;
  d.update(bytes.data(), bytes.size());
  return d.hex();
}

std::string sha256_file(const std::filesystem::path& path) {
  const int fd = open_regular_file(path);
  Digest d;
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    const ssize_t got = ::read(fd, buf.data(), buf.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int err = errno;
      ::close(fd);
      throw InputError(fmt::format("{}: cannot read: {}", path.string(), std::strerror(err)));
    }
    if (got == 0) break;
    d.update(buf.data(), size_t(got));
  }
  ::close(fd);
  return d.hex();
}

}  // namespace mirad
