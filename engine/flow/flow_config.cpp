// FlowConfig validation and JSON round trip; FlowLayout offsets.
#include "engine/flow/flow_config.h"

#include <set>
#include <type_traits>

#include "core/error.h"

namespace mirad {

void FlowConfig::validate() const {
  CHECK_INPUT(dim >= 2, "flow: dim must be >= 2 (got {})", dim);
  CHECK_INPUT(cond_dim >= 0, "flow: cond_dim must be >= 0 (got {})", cond_dim);
  CHECK_INPUT(n_blocks >= 1, "flow: n_blocks must be >= 1 (got {})", n_blocks);
  CHECK_INPUT(hidden >= 0, "flow: hidden must be >= 0 (0 = 2*dim; got {})", hidden);
  CHECK_INPUT(clamp > 0 && clamp < 20, "flow: clamp must be in (0, 20) (got {})", clamp);
  // Bounds that keep every index in int32 (permutations) and the parameter count in int64.
  constexpr int64_t kMaxWidth = int64_t(1) << 20;
  CHECK_INPUT(dim <= kMaxWidth, "flow: dim must be <= {} (got {})", kMaxWidth, dim);
  CHECK_INPUT(cond_dim <= kMaxWidth, "flow: cond_dim must be <= {} (got {})", kMaxWidth, cond_dim);
  CHECK_INPUT(hidden <= 2 * kMaxWidth, "flow: hidden must be <= {} (got {})", 2 * kMaxWidth,
              hidden);
  CHECK_INPUT(n_blocks <= 1024, "flow: n_blocks must be <= 1024 (got {})", n_blocks);
}

nlohmann::json FlowConfig::to_json() const {
  return {{"dim", dim},         {"cond_dim", cond_dim}, {"n_blocks", n_blocks},
          {"hidden", hidden},   {"clamp", clamp},       {"seed", seed}};
}

FlowConfig FlowConfig::from_json(const nlohmann::json& j) {
  CHECK_INPUT(j.is_object(), "flow config must be a JSON object");
  static const std::set<std::string> known = {"dim",    "cond_dim", "n_blocks",
                                              "hidden", "clamp",    "seed"};
  for (auto& [key, value] : j.items())
    CHECK_INPUT(known.count(key), "flow config: unknown key '{}' (valid: dim, cond_dim, "
                "n_blocks, hidden, clamp, seed)", key);
  FlowConfig c;
  auto get = [&](const char* key, auto& field) {
    if (!j.contains(key)) return;
    const auto& v = j.at(key);
    using F = std::decay_t<decltype(field)>;
    // nlohmann converts 16.9 to 16 and -1 to 2^64-1 without a word: integers must be integers.
    const bool ok = std::is_integral_v<F>
                        ? (std::is_unsigned_v<F> ? v.is_number_unsigned() : v.is_number_integer())
                        : v.is_number();
    CHECK_INPUT(ok, "flow config: key '{}' must be {} (got {})", key,
                std::is_integral_v<F> ? (std::is_unsigned_v<F> ? "a non-negative integer"
                                                               : "an integer")
                                      : "a number",
                v.dump());
    v.get_to(field);
  };
  get("dim", c.dim);
  get("cond_dim", c.cond_dim);
  get("n_blocks", c.n_blocks);
  get("hidden", c.hidden);
  get("clamp", c.clamp);
  get("seed", c.seed);
  c.validate();
  return c;
}

FlowLayout::FlowLayout(const FlowConfig& c) {
  c.validate();
  const int64_t H = c.hidden_width(), d1 = c.d1(), d2 = c.d2(), C = c.cond_dim;
  int64_t off = 0;
  for (int64_t k = 0; k < c.n_blocks; ++k) {
    BlockOffsets b;
    b.w1 = off, off += H * (d1 + C);
    b.b1 = off, off += H;
    b.w2 = off, off += 2 * d2 * H;
    b.b2 = off, off += 2 * d2;
    blocks.push_back(b);
  }
  log_scale = off, off += c.dim;
  bias = off, off += c.dim;
  n_params = off;
}

}  // namespace mirad
