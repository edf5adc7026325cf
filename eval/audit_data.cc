// The audit's synthetic material: facts, canaries, scratch states and adding texts to them.
#include "eval/audit_internal.h"

#include <algorithm>

namespace mnemo::audit_internal {
namespace {

const std::vector<std::string> kFirst = {
    "ada",   "bruno", "chiara", "dmitri", "elena", "farid",  "greta", "hugo",  "ines",  "jonas", "keiko", "lars",
    "maya",  "nils",  "olga",   "pavel",  "quinn", "rosa",   "sami",  "tara",  "umar",  "vera",  "wim",   "xenia",
    "yusuf", "zora",  "anton",  "bea",    "cyril", "dora",   "emil",  "fiona", "gil",   "hana",  "ivo",   "jana",
    "kai",   "lina",  "marek",  "nora",   "otto",  "petra",  "rafael", "sofia", "tomas", "ulla",  "viktor", "wanda"};
const std::vector<std::string> kLast = {
    "abbott", "brandt", "castell", "dufour", "eklund", "falk",   "garber", "horvat", "ivanic", "jensen",
    "kovac",  "lindqvist", "moreau", "novak", "ortega", "pirelli", "quast", "rinaldi", "sauer", "tamm",
    "ulrich", "varga",  "weiss",  "xavier", "yilmaz", "zeller", "amsel", "bauer",  "corvin", "delacroix",
    "engel",  "fischer", "gallo", "hartmann", "ito",   "jovanovic", "keller", "lorenz", "maier", "nagel",
    "oberg",  "petrov", "rossi",  "schulz", "teller", "unger", "vogel", "winter"};
const std::vector<std::string> kCity = {"harwick", "belmont", "quillon", "ostrava", "lindau",  "tarbes", "corvo",
                                        "maribor", "esbjerg", "vianden", "sintra",  "ghent",   "lucca",  "brno",
                                        "trondheim", "arles", "bergamo", "kolding", "zadar",   "ronda"};
const std::vector<std::string> kJob = {"baker",     "pilot",   "surveyor",  "chemist", "librarian", "carpenter",
                                       "nurse",     "glazier", "archivist", "ferryman", "welder",   "botanist",
                                       "cartographer", "miller", "tanner", "locksmith"};
const std::vector<std::string> kColor = {"red", "green", "amber", "grey", "violet", "white", "black", "blue"};
const std::vector<std::string> kAnimal = {"cat", "parrot", "tortoise", "hound", "ferret", "goat", "owl", "pony"};
const std::vector<std::string> kThing = {"lamp", "trunk", "bicycle", "violin", "ledger", "kettle", "clock", "boat"};

template <typename T>
const T& Pick(std::mt19937_64& rng, const std::vector<T>& items) {
  return items[std::uniform_int_distribution<size_t>(0, items.size() - 1)(rng)];
}

int Uniform(std::mt19937_64& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }


}  // namespace

std::string SyntheticFact(std::mt19937_64& rng) {
  const std::string person = Pick(rng, kFirst) + " " + Pick(rng, kLast);
  switch (Uniform(rng, 0, 3)) {
    case 0:
      return person + " was born in " + Pick(rng, kCity) + " in " + std::to_string(Uniform(rng, 1900, 2010)) +
             " and works as a " + Pick(rng, kJob) + ".";
    case 1:
      return person + " keeps a " + Pick(rng, kColor) + " " + Pick(rng, kAnimal) + " at " +
             std::to_string(Uniform(rng, 1, 999)) + " " + Pick(rng, kLast) + " street in " + Pick(rng, kCity) + ".";
    case 2:
      return "The " + Pick(rng, kColor) + " " + Pick(rng, kThing) + " in room " + std::to_string(Uniform(rng, 1, 999)) +
             " belongs to " + person + " of " + Pick(rng, kCity) + ".";
    default:
      return person + " paid " + std::to_string(Uniform(rng, 2, 9999)) + " crowns for a " + Pick(rng, kThing) +
             " in " + Pick(rng, kCity) + " on day " + std::to_string(Uniform(rng, 1, 365)) + ".";
  }
}

size_t SyntheticNameCount() { return kFirst.size() * kLast.size(); }

std::vector<std::string> SyntheticNames() {
  std::vector<std::string> names;
  for (const auto& f : kFirst) {
    for (const auto& l : kLast) names.push_back(f + " " + l);
  }
  return names;
}

Status Auditor::MakeCanaries(LanguageModel& model, int n, std::vector<Canary>* out) {
  out->clear();
  for (int i = 0; i < n; ++i) {
    if (next_name_ >= names_.size()) return Status::InvalidArgument("too many canaries for the audit's name pool");
    Canary c;
    c.name = names_[next_name_++];
    c.secret = format_.RandomSecret(rng_);
    size_t at = 0;
    c.text = format_.Render(c.name, c.secret, &at);
    c.ids = model.tokenizer->Encode(c.text);
    c.span_first = SpanFirstToken(*model.tokenizer, c.ids, at);
    c.reference_seed = rng_();
    used_texts_.insert(c.text);
    out->push_back(std::move(c));
  }
  return Status::OK();
}

std::vector<std::string> Auditor::MakeFacts(int n) {
  std::vector<std::string> out;
  int attempts = 0;
  while (static_cast<int>(out.size()) < n && attempts++ < 100 * n + 1000) {
    std::string text = SyntheticFact(rng_);
    if (used_texts_.insert(text).second) out.push_back(std::move(text));
  }
  return out;
}

Status Auditor::OpenScratchState(const std::string& dir, LanguageModel& model, const std::string& datastore,
                                 std::unique_ptr<StateService>* out) {
  MNEMO_RETURN_IF_ERROR(StateService::Create(dir, model, datastore, nullptr));
  StateOptions options;
  options.store.snapshot_every = 0;
  return StateService::OpenWithModel(dir, &model, options, out);
}

Status Auditor::AddTexts(StateService* scratch, const std::vector<std::string>& texts, int copies,
                         const std::string& kind, std::vector<int64_t>* ids) {
  const size_t chunk = 512;
  for (size_t begin = 0; begin < texts.size(); begin += chunk) {
    std::vector<FactText> facts;
    for (size_t i = begin; i < std::min(texts.size(), begin + chunk); ++i) {
      facts.push_back({texts[i], "", json{{"audit", kind}}.dump()});
    }
    std::vector<int64_t> added;
    MNEMO_RETURN_IF_ERROR(scratch->AddFacts(facts, &added, copies));
    if (ids != nullptr) ids->insert(ids->end(), added.begin(), added.end());
    if (o_.cancel != nullptr && o_.cancel->load()) return Status::Cancelled("audit cancelled");
  }
  return Status::OK();
}

}  // namespace mnemo::audit_internal
