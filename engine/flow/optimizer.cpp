// Optimizer config validation, state handling and backend dispatch for SGD and Adam(W).
#include "engine/flow/optimizer.h"

#include <cmath>
#include <type_traits>
#include <utility>

#include "core/error.h"
#include "kernels/optim_math.h"

namespace mirad {
namespace {

using nlohmann::json;

// Defaults of each optimizer type; a key absent from this table is not valid for that type.
const json& defaults_for(const std::string& type) {
  static const json sgd = {{"type", "sgd"},
                           {"lr", nullptr},
                           {"momentum", 0.0},
                           {"weight_decay", 0.0},
                           {"check_finite", true}};
  static const json adam = {{"type", "adam"},
                            {"lr", nullptr},
                            {"beta1", 0.9},
                            {"beta2", 0.999},
                            {"eps", 1e-8},
                            {"weight_decay", 0.0},
                            {"decoupled_weight_decay", false},
                            {"check_finite", true}};
  return type == "sgd" ? sgd : adam;
}

std::string key_list(const json& defaults) {
  std::string out;
  for (auto& [key, value] : defaults.items()) out += (out.empty() ? "" : ", ") + key;
  return out;
}

double get_number(const json& cfg, const std::string& key) {
  const json& v = cfg.at(key);
  // is_number excludes booleans, which nlohmann would otherwise convert to 0/1 silently.
  CHECK_INPUT(v.is_number(), "optimizer config: '{}' must be a number (got {})", key, v.dump());
  const double x = v.get<double>();
  CHECK_INPUT(std::isfinite(x), "optimizer config: '{}' must be finite (got {})", key, x);
  return x;
}

bool get_bool(const json& cfg, const std::string& key) {
  const json& v = cfg.at(key);
  CHECK_INPUT(v.is_boolean(), "optimizer config: '{}' must be true or false (got {})", key,
              v.dump());
  return v.get<bool>();
}

void check_unit_interval(double x, const char* key) {
  CHECK_INPUT(x >= 0.0 && x < 1.0, "optimizer config: '{}' must be in [0, 1) (got {})", key, x);
}

}  // namespace

json normalize_optimizer_config(const json& config) {
  CHECK_INPUT(config.is_object(), "optimizer config must be a JSON object (got {})", config.dump());
  CHECK_INPUT(config.contains("type"),
              "optimizer config: missing 'type' (valid types: sgd, adam, adamw)");
  CHECK_INPUT(config.at("type").is_string(), "optimizer config: 'type' must be a string (got {})",
              config.at("type").dump());
  std::string type = config.at("type").get<std::string>();
  CHECK_INPUT(type == "sgd" || type == "adam" || type == "adamw",
              "optimizer config: unknown type '{}' (valid types: sgd, adam, adamw)", type);
  const bool adamw = type == "adamw";
  if (adamw) type = "adam";

  const json& defaults = defaults_for(type);
  json out = defaults;
  for (auto& [key, value] : config.items()) {
    CHECK_INPUT(defaults.contains(key),
                "optimizer config: unknown key '{}' for type '{}' (valid keys: {})", key,
                config.at("type").get<std::string>(), key_list(defaults));
    if (key != "type") out[key] = value;
  }
  CHECK_INPUT(!out.at("lr").is_null(), "optimizer config: 'lr' is required for type '{}'", type);

  const double lr = get_number(out, "lr");
  CHECK_INPUT(lr > 0.0, "optimizer config: 'lr' must be > 0 (got {})", lr);
  const double weight_decay = get_number(out, "weight_decay");
  CHECK_INPUT(weight_decay >= 0.0, "optimizer config: 'weight_decay' must be >= 0 (got {})",
              weight_decay);
  get_bool(out, "check_finite");
  if (type == "sgd") {
    check_unit_interval(get_number(out, "momentum"), "momentum");
  } else {
    check_unit_interval(get_number(out, "beta1"), "beta1");
    check_unit_interval(get_number(out, "beta2"), "beta2");
    const double eps = get_number(out, "eps");
    CHECK_INPUT(eps > 0.0, "optimizer config: 'eps' must be > 0 (got {})", eps);
    bool decoupled = get_bool(out, "decoupled_weight_decay");
    CHECK_INPUT(!(adamw && config.contains("decoupled_weight_decay") && !decoupled),
                "optimizer config: type 'adamw' is decoupled by definition; use type 'adam' "
                "for decoupled_weight_decay false");
    if (adamw) out["decoupled_weight_decay"] = decoupled = true;
    // A shrink factor 1 - lr*wd below zero would flip the sign of every weight.
    CHECK_INPUT(!decoupled || lr * weight_decay <= 1.0,
                "optimizer config: decoupled weight decay needs lr * weight_decay <= 1 "
                "(got {} * {})",
                lr, weight_decay);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Optimizer<T>: validation, finite check and state handling shared by every type.

template <typename T>
Optimizer<T>::Optimizer(json config, int64_t n_params, Device device,
                        const std::vector<std::string>& slot_names)
    : m_config(std::move(config)),
      m_type(m_config.at("type").get<std::string>()),
      m_n_params(n_params),
      m_device(device),
      m_check_finite(m_config.at("check_finite").get<bool>()) {
  for (const auto& name : slot_names) {
    Buffer<T> b(static_cast<std::size_t>(n_params), device);
    b.zero();
    m_slots.emplace(name, std::move(b));
  }
  if (device == Device::cuda && m_check_finite)
    m_status = Buffer<unsigned long long>(2, Device::cuda);
  // The zeroing above ran on the default stream; the caller's stream must not overtake it.
  if (device == Device::cuda) mem::synchronize(Stream{});
}

template <typename T>
void Optimizer<T>::step(T* params, const T* grads, int64_t n, Stream stream) {
  CHECK_INPUT(n == m_n_params, "{} optimizer: state holds {} parameters but step() got {}", m_type,
              m_n_params, n);
  CHECK_INPUT(n == 0 || (params && grads), "{} optimizer: null params or grads for {} entries",
              m_type, n);
  const int64_t t = m_step + 1;
  const unsigned long long* gate = nullptr;
  if (m_check_finite && m_device == Device::cpu) {
    int64_t first = -1;
    const int64_t bad = optim::count_nonfinite_cpu(n, grads, &first);
    CHECK_INPUT(bad == 0,
                "{} optimizer: gradient has {} non-finite entries of {} (first at index {}); "
                "parameters left unchanged",
                m_type, bad, n, first);
  }
#ifdef MIRAD_HAVE_CUDA
  if constexpr (std::is_same_v<T, float>) {
    if (m_check_finite && m_device == Device::cuda) {
      optim::count_nonfinite_cuda(n, grads, m_status.data(), stream);
      gate = m_status.data();
    }
  }
#endif
  step_impl(params, grads, t, gate, stream);
  if (gate) {
    // The gated kernel has already declined to write if the count is non-zero; reading the
    // status back only tells the caller.
    unsigned long long status[2] = {0, 0};
    mem::copy(status, Device::cpu, gate, Device::cuda, sizeof(status), stream);
    mem::synchronize(stream);
    CHECK_INPUT(status[0] == 0,
                "{} optimizer: gradient has {} non-finite entries of {} (first at index {}); "
                "parameters left unchanged",
                m_type, status[0], n, ~status[1]);
  }
  m_step = t;
}

template <typename T>
void Optimizer<T>::step_gated(T* params, const T* grads, int64_t n, Stream stream) {
  CHECK_INPUT(n == m_n_params, "{} optimizer: state holds {} parameters but step() got {}", m_type,
              m_n_params, n);
#ifdef MIRAD_HAVE_CUDA
  if constexpr (std::is_same_v<T, float>) {
    if (m_device == Device::cuda) {
      CHECK_THROW(m_status.size() >= 2);
      optim::count_nonfinite_cuda(n, grads, m_status.data(), stream);
      step_impl(params, grads, m_step + 1, m_status.data(), stream);
      ++m_step;
      return;
    }
  }
#endif
  try {
    step(params, grads, n, stream);
  } catch (const InputError&) {
  }
}

template <typename T>
void Optimizer<T>::reset(Stream stream) {
  for (auto& [name, buffer] : m_slots) buffer.zero(stream);
  m_step = 0;
}

template <typename T>
OptimizerState<T> Optimizer<T>::export_state(Stream stream) const {
  OptimizerState<T> state;
  state.type = m_type;
  state.step = m_step;
  for (const auto& [name, buffer] : m_slots) state.slots.emplace(name, buffer.to_host(stream));
  return state;
}

template <typename T>
void Optimizer<T>::import_state(const OptimizerState<T>& state, Stream stream) {
  CHECK_INPUT(state.type == m_type, "{} optimizer: cannot import state of type '{}'", m_type,
              state.type);
  CHECK_INPUT(state.step >= 0, "{} optimizer: imported step count {} is negative", m_type,
              state.step);
  CHECK_INPUT(state.slots.size() == m_slots.size(),
              "{} optimizer: imported state has {} slots, expected {}", m_type, state.slots.size(),
              m_slots.size());
  // Validate everything before touching anything, so a bad checkpoint leaves the state intact.
  for (const auto& [name, values] : state.slots) {
    CHECK_INPUT(m_slots.count(name), "{} optimizer: unexpected state slot '{}'", m_type, name);
    CHECK_INPUT(static_cast<int64_t>(values.size()) == m_n_params,
                "{} optimizer: state slot '{}' has {} values, expected {}", m_type, name,
                values.size(), m_n_params);
  }
  for (const auto& [name, values] : state.slots)
    m_slots.at(name).copy_from(values.data(), Device::cpu, values.size(), stream);
  mem::synchronize(stream);  // the host vectors may not outlive this call
  m_step = state.step;
}

template <typename T>
void Optimizer<T>::set_learning_rate(double lr) {
  json updated = m_config;
  updated["lr"] = lr;
  m_config = normalize_optimizer_config(updated);
  configure();
}

// ---------------------------------------------------------------------------------------
// The concrete optimizers: read the config once, build the per-step coefficients, dispatch.

namespace {

template <typename T>
class Sgd final : public Optimizer<T> {
 public:
  Sgd(json config, int64_t n_params, Device device)
      : Optimizer<T>(config, n_params, device,
                     config.at("momentum").get<double>() > 0.0
                         ? std::vector<std::string>{"momentum_buffer"}
                         : std::vector<std::string>{}) {
    configure();
  }

 private:
  void configure() override {
    const json& c = this->m_config;
    m_coeffs = {T(c.at("lr").get<double>()), T(c.at("momentum").get<double>()),
                T(c.at("weight_decay").get<double>())};
  }
  void step_impl(T* params, const T* grads, int64_t, const unsigned long long* gate,
                 Stream stream) override {
    T* momentum_buffer = m_coeffs.momentum > T(0) ? this->slot("momentum_buffer") : nullptr;
    const int64_t n = this->n_params();
    if (this->device() == Device::cpu) {
      optim::sgd_step_cpu(n, params, grads, momentum_buffer, m_coeffs);
      return;
    }
#ifdef MIRAD_HAVE_CUDA
    if constexpr (std::is_same_v<T, float>) {
      optim::sgd_step_cuda(n, params, grads, momentum_buffer, m_coeffs, gate, stream);
      return;
    }
#endif
    (void)gate, (void)stream;
    CHECK_THROW(!"unreachable: make_optimizer admits CUDA only for float in CUDA builds");
  }
  optim::SgdCoeffs<T> m_coeffs{};
};

template <typename T>
class Adam final : public Optimizer<T> {
 public:
  Adam(json config, int64_t n_params, Device device)
      : Optimizer<T>(std::move(config), n_params, device, {"exp_avg", "exp_avg_sq"}) {
    configure();
  }

 private:
  void configure() override {
    const json& c = this->m_config;
    m_lr = c.at("lr").get<double>();
    m_beta1 = c.at("beta1").get<double>();
    m_beta2 = c.at("beta2").get<double>();
    m_eps = c.at("eps").get<double>();
    m_weight_decay = c.at("weight_decay").get<double>();
    m_decoupled = c.at("decoupled_weight_decay").get<bool>();
  }
  // Bias corrections depend on t only, so they are computed here once, in double, rather
  // than per element; pow keeps 1 - beta^t accurate for large t where repeated products drift.
  optim::AdamCoeffs<T> coeffs(int64_t t) const {
    const double bc1 = 1.0 - std::pow(m_beta1, double(t));
    const double bc2 = 1.0 - std::pow(m_beta2, double(t));
    return {T(m_beta1),
            T(m_beta2),
            T(m_eps),
            T(m_decoupled ? 0.0 : m_weight_decay),
            T(m_decoupled ? 1.0 - m_lr * m_weight_decay : 1.0),
            T(m_lr / bc1),
            T(std::sqrt(bc2))};
  }
  void step_impl(T* params, const T* grads, int64_t t, const unsigned long long* gate,
                 Stream stream) override {
    const auto c = coeffs(t);
    T* m = this->slot("exp_avg");
    T* v = this->slot("exp_avg_sq");
    const int64_t n = this->n_params();
    if (this->device() == Device::cpu) {
      optim::adam_step_cpu(n, params, grads, m, v, c);
      return;
    }
#ifdef MIRAD_HAVE_CUDA
    if constexpr (std::is_same_v<T, float>) {
      optim::adam_step_cuda(n, params, grads, m, v, c, gate, stream);
      return;
    }
#endif
    (void)gate, (void)stream;
    CHECK_THROW(!"unreachable: make_optimizer admits CUDA only for float in CUDA builds");
  }
  double m_lr = 0, m_beta1 = 0, m_beta2 = 0, m_eps = 0, m_weight_decay = 0;
  bool m_decoupled = false;
};

}  // namespace

template <typename T>
std::unique_ptr<Optimizer<T>> make_optimizer(const json& config, int64_t n_params, Device device) {
  json normalized = normalize_optimizer_config(config);
  CHECK_INPUT(n_params >= 0, "optimizer: n_params must be >= 0 (got {})", n_params);
  if (device == Device::cuda) {
    CHECK_INPUT((std::is_same_v<T, float>),
                "optimizer: the CUDA backend is float32 only; double runs on the CPU");
    CHECK_INPUT(cuda_compiled(),
                "optimizer: device 'cuda' requested but this build has no "
                "CUDA backend");
    CHECK_INPUT(cuda_available(),
                "optimizer: device 'cuda' requested but no CUDA device is "
                "available");
  }
  if (normalized.at("type") == "sgd")
    return std::make_unique<Sgd<T>>(std::move(normalized), n_params, device);
  return std::make_unique<Adam<T>>(std::move(normalized), n_params, device);
}

template class Optimizer<float>;
template class Optimizer<double>;
template std::unique_ptr<Optimizer<float>> make_optimizer<float>(const json&, int64_t, Device);
template std::unique_ptr<Optimizer<double>> make_optimizer<double>(const json&, int64_t, Device);

}  // namespace mirad
