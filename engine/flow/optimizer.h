// Optimizers that walk one contiguous parameter buffer: SGD (MAML's inner loop) and Adam /
// AdamW (the outer loop). CPU in float and double, CUDA in float; built from a JSON config.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/device.h"

namespace mirad {

// An optimizer's state copied to the host, for checkpoints. Slot names follow torch's
// state_dict: SGD has "momentum_buffer" (only when momentum > 0), Adam "exp_avg" and
// "exp_avg_sq". Each slot holds n_params() values.
template <typename T>
struct OptimizerState {
  std::string type;  // "sgd" or "adam"
  int64_t step = 0;  // completed steps; Adam's bias correction uses step + 1 next
  std::map<std::string, std::vector<T>> slots;
};

// The state (slots and step count) lives on device() and belongs to the optimizer; the
// parameters and gradients belong to the caller. Held through unique_ptr; copying is deleted.
template <typename T>
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of params[0, n) from grads[0, n), both on device(). CUDA work is queued on
  // `stream`; with check_finite (the default) the call then waits for the stream, because it
  // has to learn whether the gradient was finite. Throws InputError, leaving params and state
  // unchanged, when n != n_params() or when grads holds NaN/Inf (with the count and the first
  // index). With check_finite off a CUDA step is a single asynchronous kernel.
  void step(T* params, const T* grads, int64_t n, Stream stream = {});
  // step() without any host round-trip, for device-resident training loops: on CUDA the
  // update is gated on the device (a gradient with NaN/Inf leaves params and state as they
  // were, silently; the caller watches its losses and parameters instead); on the CPU it is
  // step() with the finite check, an InputError caught and ignored the same way.
  void step_gated(T* params, const T* grads, int64_t n, Stream stream = {});
  // Zeroes the moments and the step count, as a freshly built optimizer.
  void reset(Stream stream = {});

  // The complete config, defaults filled in; make_optimizer(hyperparams(), ...) rebuilds it.
  nlohmann::json hyperparams() const { return m_config; }
  OptimizerState<T> export_state(Stream stream = {}) const;
  // Throws InputError on a different type, a missing or extra slot, or a wrong slot size.
  void import_state(const OptimizerState<T>& state, Stream stream = {});

  const std::string& type() const { return m_type; }
  Device device() const { return m_device; }
  int64_t n_params() const { return m_n_params; }
  int64_t n_steps() const { return m_step; }
  double learning_rate() const { return m_config.at("lr").template get<double>(); }
  // For schedules; validated like the config (so lr <= 0 is an InputError).
  void set_learning_rate(double lr);

 protected:
  Optimizer(nlohmann::json config, int64_t n_params, Device device,
            const std::vector<std::string>& slot_names);

  // params/grads are validated; `t` is the 1-based index of this step; `gate` is the device
  // non-finite status on CUDA with check_finite (else null) that the kernel must honour.
  virtual void step_impl(T* params, const T* grads, int64_t t, const unsigned long long* gate,
                         Stream stream) = 0;
  // Called when the config changes (set_learning_rate) so subclasses re-read it.
  virtual void configure() = 0;
  T* slot(const std::string& name) { return m_slots.at(name).data(); }

  nlohmann::json m_config;

 private:
  std::string m_type;
  int64_t m_n_params = 0;
  Device m_device = Device::cpu;
  int64_t m_step = 0;
  bool m_check_finite = true;
  std::map<std::string, Buffer<T>> m_slots;
  Buffer<unsigned long long> m_status;  // CUDA only: [count, ~first index] of non-finite grads
};

// Checks an optimizer config and returns it with every default filled in. Throws InputError
// on an unknown type, an unknown key (naming it and listing the valid ones), a wrong JSON type
// or an out-of-range value. Keys:
//   {"type": "sgd", "lr", "momentum": 0, "weight_decay": 0, "check_finite": true}
//   {"type": "adam", "lr", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0,
//    "decoupled_weight_decay": false, "check_finite": true}
// "lr" is required. "type": "adamw" is Adam with decoupled_weight_decay forced true; it is
// normalised to "adam". weight_decay is L2 added to the gradient unless decoupled (AdamW).
nlohmann::json normalize_optimizer_config(const nlohmann::json& config);

// Builds an optimizer with state for n_params parameters on `device`. CUDA supports float only.
template <typename T>
std::unique_ptr<Optimizer<T>> make_optimizer(const nlohmann::json& config, int64_t n_params,
                                             Device device);

extern template class Optimizer<float>;
extern template class Optimizer<double>;
extern template std::unique_ptr<Optimizer<float>> make_optimizer<float>(const nlohmann::json&,
                                                                        int64_t, Device);
extern template std::unique_ptr<Optimizer<double>> make_optimizer<double>(const nlohmann::json&,
                                                                          int64_t, Device);

}  // namespace mirad
