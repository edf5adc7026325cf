// LayerMemories (layer_memories.h): the facts memory, one document per runtime fact, kept in step with the
// fact store by retriever/state_service.h.
#include <mutex>

#include "memory/layer_memories_internal.h"

namespace mnemo {

Status LayerMemories::FactsMemory(bool create, int64_t* id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    *id = facts_memory_;
    if (facts_memory_ != 0 || !create) return Status::OK();
  }
  // Created once; the meta row is written after the memory, so a crash in between leaves an ordinary empty
  // memory named "facts" and the next open makes a new facts memory.
  MemoryInfo info;
  MNEMO_RETURN_IF_ERROR(Create("facts", 0, &info));
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare("INSERT OR REPLACE INTO meta(key, value) VALUES('facts_memory', ?)"));
  s.BindText(1, std::to_string(info.id));
  MNEMO_RETURN_IF_ERROR(s.Run());
  facts_memory_ = info.id;
  *id = info.id;
  return Status::OK();
}

int64_t LayerMemories::facts_memory_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return facts_memory_;
}

Status LayerMemories::AddFactDocuments(const std::vector<int64_t>& fact_ids, std::vector<NewMemoryDocument>* docs) {
  if (fact_ids.size() != docs->size()) return Status::InvalidArgument("one document per fact");
  if (docs->empty()) return Status::OK();
  int64_t id = 0;
  MNEMO_RETURN_IF_ERROR(FactsMemory(/*create=*/true, &id));
  std::vector<const NewMemoryDocument*> pointers;
  for (size_t i = 0; i < docs->size(); ++i) {
    (*docs)[i].metadata_json = "{\"fact_id\":" + std::to_string(fact_ids[i]) + "}";
    pointers.push_back(&(*docs)[i]);
  }
  std::vector<MemoryDocument> added;
  return AddDocumentImpl(id, pointers, &added, nullptr);
}

Status LayerMemories::FactDocuments(std::vector<std::pair<int64_t, int64_t>>* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  out->clear();
  if (facts_memory_ == 0) return Status::OK();
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare(
      "SELECT id, json_extract(metadata, '$.fact_id') FROM documents WHERE memory_id = ? ORDER BY id"));
  s.BindInt(1, facts_memory_);
  bool row = false;
  while (true) {
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) break;
    out->push_back({s.Int(0), s.Int(1)});
  }
  return Status::OK();
}

Status LayerMemories::DeleteFactDocuments(int64_t fact_id, int64_t* deleted) {
  *deleted = 0;
  std::vector<int64_t> docs;
  int64_t memory = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    memory = facts_memory_;
    if (memory == 0) return Status::OK();
    Statement s(db_.get());
    MNEMO_RETURN_IF_ERROR(s.Prepare(
        "SELECT id FROM documents WHERE memory_id = ? AND json_extract(metadata, '$.fact_id') = ? ORDER BY id"));
    s.BindInt(1, memory);
    s.BindInt(2, fact_id);
    bool row = false;
    while (true) {
      MNEMO_RETURN_IF_ERROR(s.Next(&row));
      if (!row) break;
      docs.push_back(s.Int(0));
    }
  }
  for (int64_t doc : docs) {
    MNEMO_RETURN_IF_ERROR(DeleteDocumentImpl(memory, doc, nullptr));
    ++*deleted;
  }
  return Status::OK();
}

}  // namespace mnemo
