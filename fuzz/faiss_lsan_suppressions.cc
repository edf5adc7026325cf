// LeakSanitizer suppressions for the binaries that load crafted index files (index_file_fuzz,
// index_file_crafted_fuzz, fuzz_regression_test; and, in the main build with -DMNEMO_SANITIZE=address...,
// mnemo_tests and mnemo: tests/CMakeLists.txt).
//
// FAISS 1.7.3's readers (read_index and the read_* helpers it calls) build objects with plain `new` and leak
// what they have read so far (the index, its coarse quantizer, its inverted lists) when a later read throws.
// A payload that passes mnemo's checksums but is not a whole FAISS index (a crafted file) therefore leaks on
// each failed VectorIndex::Load, which still returns Corruption. FAISS's code, not mnemo's:
// fuzz/regressions/index_file_crafted/faiss-read-index-leak reproduces it (docs/FUZZING.md). The pattern
// matches any frame of the allocation's stack, so only allocations made inside FAISS's readers are covered;
// the second covers the memory-mapped reader (OnDiskInvertedListsIOHook::read_ArrayInvertedLists), whose
// stack the fast unwinder cuts before faiss::read_index (FAISS is built without frame pointers).
extern "C" const char* __lsan_default_suppressions() {
  return "leak:faiss::read_\nleak:faiss::OnDiskInvertedLists\n";
}
