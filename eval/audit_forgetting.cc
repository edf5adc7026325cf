// The audit's forgetting curve: canary exposure as more facts are added after them.
#include "eval/audit_internal.h"


namespace mnemo::audit_internal {

Status Auditor::Forgetting(StateService* scratch, json* out) {
  FactStore* store = &scratch->store();
  std::vector<Canary> tracked;
  MNEMO_RETURN_IF_ERROR(MakeCanaries(model_, o_.canaries, &tracked));
  std::vector<std::string> texts;
  for (const Canary& c : tracked) texts.push_back(c.text);
  std::vector<int64_t> ids;
  MNEMO_RETURN_IF_ERROR(AddTexts(scratch, texts, 1, "forgetting-canary", &ids));
  json points = json::array();
  int added = 0;
  for (size_t i = 0; i < o_.forgetting_added.size(); ++i) {
    const std::vector<std::string> fillers = MakeFacts(o_.forgetting_added[i] - added);
    MNEMO_RETURN_IF_ERROR(AddTexts(scratch, fillers, 1, "filler", nullptr));
    added += static_cast<int>(fillers.size());  // what was added (the template space could run short)
    Expo e;
    Rate rate;
    MNEMO_RETURN_IF_ERROR(Exposure(model_, store, tracked, &e, nullptr, nullptr));
    MNEMO_RETURN_IF_ERROR(SecretExtraction(model_, store, tracked, &rate, nullptr));
    points.push_back({{"added_after", added}, {"exposure", ExpoJson(e)}, {"extraction_rate", rate.rate()}});
    MNEMO_RETURN_IF_ERROR(Step("forgetting", 0.6 + 0.1 * (i + 1) / o_.forgetting_added.size()));
  }
  MNEMO_RETURN_IF_ERROR(store->Delete(ids, nullptr));
  Expo e;
  Rate rate;
  MNEMO_RETURN_IF_ERROR(Exposure(model_, store, tracked, &e, nullptr, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(model_, store, tracked, &rate, nullptr));
  (*out)["canaries"] = tracked.size();
  (*out)["points"] = points;
  (*out)["after_deletion"] = {{"exposure", ExpoJson(e)}, {"extraction_rate", rate.rate()}};
  return Status::OK();
}

}  // namespace mnemo::audit_internal
