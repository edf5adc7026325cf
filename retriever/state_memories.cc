// StateService's memorizing-layer memories (state_service.h): reading documents with the model, and the
// evidence that a deleted document left no trace.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "lm/memory_scorer.h"
#include "lm/scorer.h"
#include "retriever/state_service.h"

namespace mnemo {
namespace {

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Up to `most` pieces of `bytes`, each `piece` bytes long, spread evenly over it. SQLite splits a long
// value across overflow pages (each starting with a 4-byte pointer) and the WAL adds frame headers, so a
// copy in a file is found by its pieces, not as one run; pieces much shorter than a page mostly survive.
std::vector<std::string> Pieces(const std::string& bytes, size_t piece, size_t most) {
  std::vector<std::string> out;
  if (bytes.size() <= piece) {
    if (!bytes.empty()) out.push_back(bytes);
    return out;
  }
  const size_t span = bytes.size() - piece;
  const size_t count = std::min(most, span / piece + 1);
  for (size_t i = 0; i < count; ++i) out.push_back(bytes.substr(count > 1 ? span * i / (count - 1) : 0, piece));
  return out;
}

// Log-probabilities of ids[1..] with `memory` read by the memorizing layer (null: none).
Status ScoreWithMemory(Gpt& net, const std::vector<int32_t>& ids, KvMemory* memory, std::vector<float>* out) {
  out->assign(ids.size() - 1, 0.0f);
  SpanRequest request;
  request.memory = memory;
  return ForEachScoredSpan(net, ids, WindowOptions(), request, [&](const ScoredSpan& span) {
    for (int64_t r = 0; r < span.count; ++r) {
      (*out)[span.first_target - 1 + r] = span.logprobs[r][ids[span.first_target + r]].item<float>();
    }
    return Status::OK();
  });
}

}  // namespace

Status StateService::RequireMemories() const {
  if (memories_ != nullptr) return Status::OK();
  return Status::FailedPrecondition("the state's model has no memory layer, so it has no memories (train one with "
                                    "`mnemo train --memory-layer L` and make a state for it)");
}

Status StateService::DocumentPairs(const std::string& text, std::vector<int32_t>* tokens, std::vector<float>* keys,
                                   std::vector<float>* values) const {
  MNEMO_RETURN_IF_ERROR(RequireMemories());
  *tokens = model_->tokenizer->Encode(text);
  if (tokens->empty()) return Status::InvalidArgument("the document has no tokens");
  const int64_t limit = memories_->options().max_document_tokens;
  if (static_cast<int64_t>(tokens->size()) > limit) {
    return Status::InvalidArgument("the document has " + std::to_string(tokens->size()) +
                                   " tokens, more than the limit of " + std::to_string(limit) +
                                   " per document; read it in parts");
  }
  // [<|endoftext|>] + tokens, as documents are read everywhere; the leading token's pair is not stored.
  std::vector<int32_t> ids = {std::max<int32_t>(model_->tokenizer->eot_id(), 0)};
  ids.insert(ids.end(), tokens->begin(), tokens->end());
  std::vector<float> k, v;
  MNEMO_RETURN_IF_ERROR(ComputeMemoryPairs(model_->net, ids, static_cast<int64_t>(ids.size()), WindowOptions(), &k, &v));
  const int64_t H = model_->config.n_head, D = model_->config.head_dim();
  const int64_t n = static_cast<int64_t>(tokens->size()), all = n + 1;
  keys->resize(static_cast<size_t>(H * n * D));
  values->resize(keys->size());
  for (int64_t h = 0; h < H; ++h) {
    std::copy(k.begin() + (h * all + 1) * D, k.begin() + (h + 1) * all * D, keys->begin() + h * n * D);
    std::copy(v.begin() + (h * all + 1) * D, v.begin() + (h + 1) * all * D, values->begin() + h * n * D);
  }
  return Status::OK();
}

Status StateService::ReadDocument(int64_t memory_id, const std::string& text, const std::string& metadata_json,
                                  MemoryDocument* out, int64_t* evicted) {
  MNEMO_RETURN_IF_ERROR(RequireMemories());
  MemoryInfo info;
  MNEMO_RETURN_IF_ERROR(memories_->Get(memory_id, &info));  // an unknown id fails before the model runs
  NewMemoryDocument doc;
  doc.text = text;
  doc.metadata_json = metadata_json;
  MNEMO_RETURN_IF_ERROR(DocumentPairs(text, &doc.tokens, &doc.keys, &doc.values));
  return memories_->AddDocument(memory_id, doc, out, evicted);
}

Status StateService::VerifyMemoryDocumentDeleted(int64_t memory_id, int64_t document_id, const std::string* text,
                                                 MemoryDeletionVerdict* out) const {
  MNEMO_RETURN_IF_ERROR(RequireMemories());
  MemoryDeletionVerdict v;
  MemoryDocumentTombstone tomb;
  Status s = memories_->GetTombstone(document_id, &tomb);
  if (s.IsNotFound()) {
    MemoryDocument live;
    if (memories_->GetDocument(memory_id, document_id, false, &live).ok()) {
      return Status::FailedPrecondition("document " + std::to_string(document_id) + " of memory " +
                                        std::to_string(memory_id) + " is still stored; delete it first");
    }
    return Status::NotFound("memory " + std::to_string(memory_id) + " never had a document " +
                            std::to_string(document_id));
  }
  MNEMO_RETURN_IF_ERROR(s);
  if (tomb.memory_id != memory_id) {
    return Status::NotFound("document " + std::to_string(document_id) + " belonged to memory " +
                            std::to_string(tomb.memory_id) + ", not " + std::to_string(memory_id));
  }
  MNEMO_RETURN_IF_ERROR(memories_->FindTraces(memory_id, document_id, &v.traces));
  std::vector<std::string> reasons;
  if (v.traces.row) reasons.push_back("its row is still in the database");
  if (v.traces.ring_tokens > 0) reasons.push_back(std::to_string(v.traces.ring_tokens) + " of its tokens are in the ring");
  if (!v.traces.ring_matches_rebuild) reasons.push_back("the served ring differs from one rebuilt from the database");

  if (text != nullptr) {
    v.probed = true;
    std::vector<int32_t> tokens;
    std::vector<float> keys, values;
    MNEMO_RETURN_IF_ERROR(DocumentPairs(*text, &tokens, &keys, &values));
    const int64_t n = static_cast<int64_t>(tokens.size());
    // Keys a live document shares (the same leading tokens give the same keys) are not its traces.
    MNEMO_RETURN_IF_ERROR(memories_->CountKeysBeyondStored(memory_id, keys.data(), n, &v.keys_held));
    if (v.keys_held > 0) reasons.push_back(std::to_string(v.keys_held) + " of its keys are held by the memory");
    // The bytes a copy would carry: pieces of its text and of its keys as stored (little-endian fp32,
    // [heads, n, head_dim]). A piece a live document also holds (a shared first token, a text quoted inside
    // another) is no trace of it.
    const std::string key_blob(reinterpret_cast<const char*>(keys.data()), keys.size() * sizeof(float));
    std::vector<std::string> needles = Pieces(key_blob, 64, 16);
    if (text->size() >= 16) {
      for (std::string& p : Pieces(*text, 32, 16)) needles.push_back(std::move(p));
    }
    std::vector<std::string> unique;
    for (const std::string& needle : needles) {
      bool live = false;
      MNEMO_RETURN_IF_ERROR(memories_->StoredDocumentsContain(needle, &live));
      if (!live) unique.push_back(needle);
    }
    for (const std::string& path : {memories_->path(), memories_->path() + "-wal", memories_->path() + "-shm",
                                    memories_->RingSnapshotPath(memory_id)}) {
      if (!std::filesystem::exists(path)) continue;
      const std::string data = ReadWhole(path);
      for (const std::string& needle : unique) {
        if (data.find(needle) != std::string::npos) {
          ++v.files_with_content;
          break;
        }
      }
    }
    if (v.files_with_content > 0) reasons.push_back(std::to_string(v.files_with_content) + " state files hold its text or keys");
    // Its tokens scored with the served memory and with one rebuilt from the database must agree exactly.
    std::vector<int32_t> ids = {std::max<int32_t>(model_->tokenizer->eot_id(), 0)};
    ids.insert(ids.end(), tokens.begin(), tokens.end());
    std::unique_ptr<KvMemory> live, rebuilt;
    std::vector<float> lp_live, lp_rebuilt, lp_base;
    Status r = memories_->Reader(memory_id, &live);
    if (r.ok()) {
      MNEMO_RETURN_IF_ERROR(memories_->RebuiltReader(memory_id, &rebuilt));
      MNEMO_RETURN_IF_ERROR(ScoreWithMemory(model_->net, ids, live.get(), &lp_live));
      MNEMO_RETURN_IF_ERROR(ScoreWithMemory(model_->net, ids, rebuilt.get(), &lp_rebuilt));
    } else if (!r.IsNotFound()) {
      return r;
    }
    MNEMO_RETURN_IF_ERROR(ScoreWithMemory(model_->net, ids, nullptr, &lp_base));
    if (lp_live.empty()) lp_live = lp_rebuilt = lp_base;  // the whole memory is gone: nothing reads it
    v.probe_tokens = static_cast<int64_t>(lp_base.size());
    for (size_t i = 0; i < lp_base.size(); ++i) {
      v.max_abs_logprob_diff = std::max(v.max_abs_logprob_diff, std::fabs(double(lp_live[i]) - lp_rebuilt[i]));
      v.mean_logprob_memory += lp_live[i] / static_cast<double>(lp_base.size());
      v.mean_logprob_base += lp_base[i] / static_cast<double>(lp_base.size());
    }
    if (v.max_abs_logprob_diff != 0) reasons.push_back("its log-probs differ from a memory rebuilt without it");
  }
  for (const std::string& reason : reasons) v.reason += (v.reason.empty() ? "" : "; ") + reason;
  v.passed = reasons.empty();
  *out = v;
  return Status::OK();
}

}  // namespace mnemo
