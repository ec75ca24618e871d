// Cross-checks of the fields a detector's config.json holds twice (issue 13, finding 13). The
// flow file is covered by its sha256, config.json is not: an edited copy that contradicts the
// other (config.features.smooth against backbone.smooth gave scores of 7.8e7) is refused when
// the model loads, instead of one copy being used and the other ignored.
#pragma once

#include <string>

#include "engine/detector/detector_model.h"

namespace mirad {

// InputError naming both fields of the first contradiction. `where` names the file.
void check_model_consistency(const DetectorModel& m, const std::string& where);

}  // namespace mirad
