// The features-file format that `mirad embed` writes (safetensors, one tensor per tap, and
// metadata naming the backbone, input size, normalisation, smoothing, precision, taps and every
// image with its content hash), and reading it back for a run that asks for those features.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "host/features.h"

namespace mirad {

// The features of `images` from req.features_file. InputError when the file does not match the
// request (backbone, taps, input size, smoothing, precision, image list, or any image's content
// hash: a stale cache is never used).
Features load_features_file(const std::vector<std::filesystem::path>& images,
                            const FeatureRequest& req, const JobProgress& progress);

// Metadata `mirad embed` writes so a features file can be checked before reuse.
std::map<std::string, std::string> features_metadata(const Features& f,
                                                     const std::vector<std::filesystem::path>& images,
                                                     const std::vector<std::string>& image_sha256);

}  // namespace mirad
