// The audit's parametric vs datastore comparison: canaries in the datastore against canaries in the
// training text of a fine-tuned copy of the model.
#include "eval/audit_internal.h"

#include <algorithm>

#include "lm/checkpoint.h"
#include "lm/trainer.h"
#include "util/file_util.h"

namespace mnemo::audit_internal {

// The same kind of canaries (a) only in the datastore, (b) only in the LM's training text: a copy of the
// model fine-tuned on synthetic facts with each (b) canary repeated finetune_repetitions times, serving
// a memory of those facts plus the (a) canaries (the base datastore's keys belong to the original model).
// Each row has the exposure under the kNN-LM before and after the (a) canaries are deleted, and under the
// fine-tuned model alone ("base_lm", which no deletion changes); (b) also under the original model.
Status Auditor::Parametric(json* out) {
  std::vector<Canary> in_text, in_store;
  MNEMO_RETURN_IF_ERROR(MakeCanaries(model_, o_.canaries, &in_text));
  MNEMO_RETURN_IF_ERROR(MakeCanaries(model_, o_.canaries, &in_store));
  // The training text: synthetic facts, which the memory also holds (a datastore over the training text,
  // as in the kNN-LM papers), plus the (b) canaries, which it does not.
  const std::vector<std::string> corpus = MakeFacts(300);
  std::vector<std::string> lines = corpus;
  for (const Canary& c : in_text) {
    for (int i = 0; i < o_.finetune_repetitions; ++i) lines.push_back(c.text);
  }
  std::shuffle(lines.begin(), lines.end(), rng_);
  std::string train, valid;
  for (const auto& l : lines) train += l + "\n";
  for (const auto& l : MakeFacts(200)) valid += l + "\n";
  const std::string dir = o_.scratch_dir + "/finetune";
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(dir));
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(dir + "/train.txt", train));
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(dir + "/valid.txt", valid));
  TrainOptions t;
  t.train_path = dir + "/train.txt";
  t.valid_path = dir + "/valid.txt";
  t.out_dir = dir + "/model";
  t.init_from = model_.dir;
  t.steps = o_.finetune_steps;
  t.batch_size = 8;
  t.seq_len = std::min<int64_t>(64, model_.config.n_positions);
  t.learning_rate = 1e-3;
  t.eval_interval = t.steps;
  t.eval_tokens = 4096;
  t.seed = o_.seed;
  t.quiet = true;
  t.cancel = o_.cancel;
  TrainReport trained;
  MNEMO_RETURN_IF_ERROR(Train(t, &trained));
  MNEMO_RETURN_IF_ERROR(Step("parametric: fine-tuned", 0.9));
  std::unique_ptr<LanguageModel> tuned;
  // Training ran on the CPU; the tuned copy is served where the audited model runs.
  MNEMO_RETURN_IF_ERROR(LoadLanguageModel(t.out_dir, &tuned, model_.net->device()));
  std::unique_ptr<StateService> scratch;
  MNEMO_RETURN_IF_ERROR(OpenScratchState(o_.scratch_dir + "/parametric-state", *tuned, "", &scratch));
  FactStore* store = &scratch->store();
  MNEMO_RETURN_IF_ERROR(AddTexts(scratch.get(), corpus, 1, "training-text", nullptr));
  std::vector<std::string> texts;
  for (const Canary& c : in_store) texts.push_back(c.text);
  std::vector<int64_t> ids;
  MNEMO_RETURN_IF_ERROR(AddTexts(scratch.get(), texts, 1, "parametric-canary", &ids));
  // Token ids are the same under the fine-tuned copy (same tokenizer).
  Expo store_before, text_before, store_after, text_after, text_original, store_base, text_base;
  Rate store_x_before, text_x_before, store_x_after, text_x_after;
  MNEMO_RETURN_IF_ERROR(Exposure(*tuned, store, in_store, &store_before, &store_base, nullptr));
  MNEMO_RETURN_IF_ERROR(Exposure(*tuned, store, in_text, &text_before, &text_base, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(*tuned, store, in_store, &store_x_before, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(*tuned, store, in_text, &text_x_before, nullptr));
  MNEMO_RETURN_IF_ERROR(store->Delete(ids, nullptr));
  MNEMO_RETURN_IF_ERROR(Exposure(*tuned, store, in_store, &store_after, nullptr, nullptr));
  MNEMO_RETURN_IF_ERROR(Exposure(*tuned, store, in_text, &text_after, nullptr, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(*tuned, store, in_store, &store_x_after, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(*tuned, store, in_text, &text_x_after, nullptr));
  // The (b) canaries under the model before fine-tuning: what training added.
  MNEMO_RETURN_IF_ERROR(Exposure(model_, nullptr, in_text, nullptr, &text_original, nullptr));
  (*out)["finetune"] = {{"steps", trained.steps},
                        {"tokens", trained.tokens_seen},
                        {"seconds", trained.seconds},
                        {"final_loss", trained.final_train_loss},
                        {"canary_repetitions", o_.finetune_repetitions}};
  json rows = json::array();
  rows.push_back({{"placement", "datastore"},
                  {"canaries", in_store.size()},
                  {"before", ExpoJson(store_before)},
                  {"after_deletion", ExpoJson(store_after)},
                  {"base_lm", ExpoJson(store_base)},
                  {"extraction_before", store_x_before.rate()},
                  {"extraction_after_deletion", store_x_after.rate()}});
  rows.push_back({{"placement", "training_text"},
                  {"canaries", in_text.size()},
                  {"before", ExpoJson(text_before)},
                  {"after_deletion", ExpoJson(text_after)},
                  {"base_lm", ExpoJson(text_base)},
                  {"extraction_before", text_x_before.rate()},
                  {"extraction_after_deletion", text_x_after.rate()},
                  {"original_model", ExpoJson(text_original)}});
  (*out)["rows"] = rows;
  return Status::OK();
}

}  // namespace mnemo::audit_internal
