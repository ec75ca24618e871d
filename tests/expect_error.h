// expect_input_error: the call must throw InputError, and its message must name the problem
// (contain every given fragment).
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace mirad::test {

template <typename F>
void expect_input_error(F&& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an InputError mentioning '"
                  << (fragments.empty() ? std::string() : fragments.front()) << "'";
  } catch (const InputError& e) {
    const std::string what = e.what();
    for (const auto& f : fragments)
      EXPECT_NE(what.find(f), std::string::npos) << "'" << f << "' not in: " << what;
  }
}

template <typename F, typename... S>
void expect_input_error(F&& fn, const S&... fragments) {
  std::vector<std::string> all;
  (all.emplace_back(std::string_view(fragments)), ...);
  expect_input_error(std::forward<F>(fn), all);
}

}  // namespace mirad::test
