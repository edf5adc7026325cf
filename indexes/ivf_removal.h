// RemoveFromIvfPreservingOrder: removal from a FAISS IVF index that keeps every inverted list in insertion
// order, which VectorIndex::Remove's contract needs (an index answers, tie order included, as one that
// never held the removed ids). Internal to indexes/.
//
// FAISS's own IndexIVF::remove_ids fills each hole with the list's last entry. That reorders the list, and
// scan order decides how equal-distance candidates are ranked and which takes the last top-k slot. Equal
// distances are common here: a datastore repeats keys whenever a context repeats, and PQ codes collide. So
// after a FAISS removal the index no longer answers exactly like one built without the removed ids (the
// removal test catches this). Compacting each touched list in place keeps the survivors in insertion order,
// the order add_with_ids appends them in; the DirectMap is updated for every moved entry.
//
// Thread-safety: the caller holds the index exclusively.
#pragma once

#include <cstdint>

namespace faiss {
struct ArrayInvertedLists;
struct IndexIVF;
}  // namespace faiss

namespace mnemo {

// Removes from `ivf` (whose inverted lists are `lists`, and whose DirectMap is a Hashtable) the entries of
// the n `ids` it holds; absent ids, and ids listed twice, are skipped. Returns how many were removed and
// lowers ivf->ntotal by as many. Cost: O(n + size of the touched lists).
int64_t RemoveFromIvfPreservingOrder(faiss::IndexIVF* ivf, faiss::ArrayInvertedLists* lists, const int64_t* ids,
                                     int64_t n);

}  // namespace mnemo
