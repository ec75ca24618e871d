// libFuzzer target: dataset list files (load_list). The input is the training list, optionally
// followed by kPartSeparator and a test list; both sit in a folder holding a few real images
// and masks they can name (a.png, b.png, sub/c.png, small.png, mask.png, zero.png, bad.png,
// empty.png). A dataset that loads is then validated (every image and mask header read).
#include "dataset_files.h"
#include "fuzz_util.h"
#include "host/dataset.h"

using namespace mirad;
using namespace mirad::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = setup();
  const fs::path root = dir / "list";
  static const bool laid_out = [&] {
    reset_dir(root / "sub");
    const std::pair<const char*, char> files[] = {
        {"a.png", 'p'},    {"b.png", 'p'},    {"sub/c.png", 'p'}, {"small.png", 's'},
        {"mask.png", 'm'}, {"zero.png", 'z'}, {"bad.png", 'g'},   {"empty.png", 'e'}};
    for (const auto& [name, kind] : files) write_file(root / name, file_bytes(kind));
    return true;
  }();
  (void)laid_out;

  const Parts parts = split_parts(as_text(data, size));
  write_file(root / "train.txt", parts.first);
  if (parts.has_second) write_file(root / "test.txt", parts.second);
  expect_only_input_errors([&] {
    const Dataset d = load_list(root / "train.txt", parts.has_second ? root / "test.txt" : "");
    require(d.layout == "list" && !d.train.empty(), "load_list returned an empty training set");
    d.validate();
  });
  return 0;
}
