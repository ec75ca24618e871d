// libFuzzer target: JPEG decoding through decode_image and read_image_info (image_target.h).
#include "image_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return mirad::fuzz::fuzz_image(data, size);
}
