// VectorIndex persistence: save/load round trips, memory-mapped loads, and every kind of damaged file.
#include "tests/vector_index_fixture.h"

namespace mnemo {
namespace vector_index_test {
namespace {

// ---------------------------------------------------------------------------------------------------------
// Persistence.

TEST_P(VectorIndexTypeTest, SaveLoadRoundTripGivesIdenticalResults) {
  auto index = Filled(2000);
  const auto queries = MixtureVectors(50, kDim, 20, 81);
  const Results want = SearchOrDie(*index, queries, 10, 4);
  const std::string path = dir_.File("index.mnemo");
  ASSERT_TRUE(index->Save(path).ok());

  for (bool mmap : {false, true}) {
    SCOPED_TRACE(mmap ? "mmap" : "in memory");
    auto loaded = LoadOrDie(path, mmap);
    ASSERT_NE(loaded, nullptr);
    EXPECT_EQ(loaded->dim(), kDim);
    EXPECT_EQ(loaded->metric(), GetParam().metric);
    EXPECT_EQ(loaded->spec(), index->spec());
    EXPECT_EQ(loaded->size(), 2000);
    EXPECT_TRUE(loaded->is_trained());
    EXPECT_EQ(loaded->Ids(), index->Ids());
    EXPECT_EQ(loaded->read_only(), mmap);
    const Results got = SearchOrDie(*loaded, queries, 10, 4);
    EXPECT_EQ(got.ids, want.ids);
    EXPECT_EQ(got.distances, want.distances);

    // A loaded index saves again to an equivalent file (for mmap, straight from the mapping).
    const std::string copy = dir_.File(mmap ? "copy_mmap.mnemo" : "copy.mnemo");
    ASSERT_TRUE(loaded->Save(copy).ok());
    auto reloaded = LoadOrDie(copy);
    const Results again = SearchOrDie(*reloaded, queries, 10, 4);
    EXPECT_EQ(again.ids, want.ids);
    EXPECT_EQ(again.distances, want.distances);
  }
}

TEST_P(VectorIndexTypeTest, MemoryMappedIndexIsReadOnly) {
  auto index = Filled(400);
  const std::string path = dir_.File("index.mnemo");
  ASSERT_TRUE(index->Save(path).ok());
  auto mapped = LoadOrDie(path, /*mmap=*/true);
  ASSERT_NE(mapped, nullptr);
  const auto v = GaussianVectors(1, kDim, 91);
  const int64_t id = 123456789;
  EXPECT_EQ(mapped->Add(1, v.data(), &id).code(), Status::Code::kFailedPrecondition);
  const int64_t present = IdOf(3);
  int64_t removed = -1;
  EXPECT_EQ(mapped->Remove(&present, 1, &removed).code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(mapped->Train(400, GaussianVectors(400, kDim, 92).data()).code(),
            Status::Code::kFailedPrecondition);
  EXPECT_TRUE(mapped->Contains(present));
  EXPECT_EQ(mapped->size(), 400);

  // The in-memory load of the same file stays writable.
  auto writable = LoadOrDie(path);
  EXPECT_TRUE(writable->Remove(&present, 1, &removed).ok());
  EXPECT_EQ(removed, 1);
}

TEST_P(VectorIndexTypeTest, TruncatedFileIsCorruption) {
  auto index = Filled(500);
  const std::string good = dir_.File("good.mnemo");
  ASSERT_TRUE(index->Save(good).ok());
  const std::string bytes = ReadOrDie(good);
  const size_t size = bytes.size();
  const std::string path = dir_.File("truncated.mnemo");
  for (size_t length : {size_t{1}, size_t{8}, size_t{64}, size_t{127}, size_t{128}, size_t{129}, size_t{200},
                        size / 2, size - 8, size - 1}) {
    WriteFileOrDie(path, bytes.substr(0, length));
    for (bool mmap : {false, true}) {
      SCOPED_TRACE("length " + std::to_string(length) + (mmap ? " mmap" : ""));
      ExpectCorruptionNaming(LoadStatus(path, mmap), path);
    }
  }
  // Trailing garbage is as suspect as missing bytes.
  WriteFileOrDie(path, bytes + "x");
  ExpectCorruptionNaming(LoadStatus(path, false), path);
}

TEST_P(VectorIndexTypeTest, FlippedPayloadByteIsCorruption) {
  auto index = Filled(500);
  const std::string good = dir_.File("good.mnemo");
  ASSERT_TRUE(index->Save(good).ok());
  const std::string bytes = ReadOrDie(good);
  const std::string path = dir_.File("flipped.mnemo");
  for (size_t offset : {kIndexFileHeaderSize, kIndexFileHeaderSize + 5, bytes.size() / 2, bytes.size() - 1}) {
    std::string damaged = bytes;
    damaged[offset] ^= 0x10;
    WriteFileOrDie(path, damaged);
    for (bool mmap : {false, true}) {
      SCOPED_TRACE("offset " + std::to_string(offset) + (mmap ? " mmap" : ""));
      Status s = LoadStatus(path, mmap);
      ExpectCorruptionNaming(s, path);
      EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.ToString();
    }
  }
}

TEST_P(VectorIndexTypeTest, MemoryMappedLoadWithoutChecksumStillChecksTheSize) {
  auto index = Filled(500);
  const std::string path = dir_.File("index.mnemo");
  ASSERT_TRUE(index->Save(path).ok());
  LoadOptions options;
  options.mmap = true;
  options.verify_checksum = false;
  std::unique_ptr<VectorIndex> loaded;
  ASSERT_TRUE(VectorIndex::Load(path, options, &loaded).ok());
  EXPECT_EQ(loaded->size(), 500);
  const std::string bytes = ReadOrDie(path);
  const std::string truncated = dir_.File("truncated.mnemo");
  WriteFileOrDie(truncated, bytes.substr(0, bytes.size() - 100));
  ExpectCorruptionNaming(VectorIndex::Load(truncated, options, &loaded), truncated);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, VectorIndexTypeTest, ::testing::ValuesIn(kAllCases), CaseName);

class VectorIndexFileTest : public FaissTest {
 protected:
  void SetUp() override {
    FaissTest::SetUp();
    auto index = CreateOrDie("IVF8,Flat", Metric::kL2);
    const auto data = MixtureVectors(600, kDim, 10, 101);
    TrainIfNeeded(index.get(), data);
    AddOrDie(index.get(), data, IdsFor(600));
    path_ = dir_.File("index.mnemo");
    ASSERT_TRUE(index->Save(path_).ok());
    bytes_ = ReadOrDie(path_);
  }

  // A file with a well-formed header (correct checksums) in front of `payload`.
  std::string WithHeader(const std::string& spec, const std::string& payload, int dim = kDim) {
    IndexFileHeader header;
    header.dim = dim;
    header.metric = 0;
    header.spec = spec;
    header.ntotal = 600;
    header.payload_size = payload.size();
    header.payload_crc = Crc32(payload.data(), payload.size());
    return EncodeIndexFileHeader(header) + payload;
  }

  ScratchDir dir_;
  std::string path_;
  std::string bytes_;
};

TEST_F(VectorIndexFileTest, WrongExpectedDimIsInvalidArgumentNamingBoth) {
  LoadOptions options;
  options.expected_dim = 32;
  std::unique_ptr<VectorIndex> index;
  Status s = VectorIndex::Load(path_, options, &index);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("16"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("32"), std::string::npos) << s.ToString();
  options.expected_dim = kDim;
  EXPECT_TRUE(VectorIndex::Load(path_, options, &index).ok());
}

TEST_F(VectorIndexFileTest, MissingFileIsNotFound) {
  const std::string missing = dir_.File("missing.mnemo");
  Status s = LoadStatus(missing, false);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find(missing), std::string::npos) << s.ToString();
  EXPECT_TRUE(LoadStatus(missing, true).IsNotFound());
}

TEST_F(VectorIndexFileTest, EmptyFileIsCorruption) {
  const std::string empty = dir_.File("empty.mnemo");
  WriteFileOrDie(empty, "");
  ExpectCorruptionNaming(LoadStatus(empty, false), empty);
  ExpectCorruptionNaming(LoadStatus(empty, true), empty);
}

TEST_F(VectorIndexFileTest, WrongMagicIsCorruption) {
  std::string damaged = bytes_;
  damaged.replace(0, 8, "NOTANIDX");
  WriteFileOrDie(path_, damaged);
  Status s = LoadStatus(path_, false);
  ExpectCorruptionNaming(s, path_);
  EXPECT_NE(s.message().find("magic"), std::string::npos) << s.ToString();
}

TEST_F(VectorIndexFileTest, EveryFlippedHeaderByteIsCorruption) {
  for (size_t offset = 0; offset < kIndexFileHeaderSize; ++offset) {
    std::string damaged = bytes_;
    damaged[offset] ^= 0x01;
    WriteFileOrDie(path_, damaged);
    SCOPED_TRACE("offset " + std::to_string(offset));
    ExpectCorruptionNaming(LoadStatus(path_, offset % 2 == 0), path_);
  }
}

TEST_F(VectorIndexFileTest, NewerFormatVersionIsCorruption) {
  std::string damaged = bytes_;
  damaged[8] = 2;  // version field, then re-seal the header checksum
  const uint32_t crc = Crc32(damaged.data(), 124);
  for (int i = 0; i < 4; ++i) damaged[124 + i] = static_cast<char>((crc >> (8 * i)) & 0xFF);
  WriteFileOrDie(path_, damaged);
  Status s = LoadStatus(path_, false);
  ExpectCorruptionNaming(s, path_);
  EXPECT_NE(s.message().find("version 2"), std::string::npos) << s.ToString();
}

// Checksums pass, so FAISS itself must reject the payload; its exception becomes Corruption.
TEST_F(VectorIndexFileTest, GarbagePayloadWithValidChecksumIsCorruption) {
  std::string garbage(4096, '\0');
  std::mt19937 rng(111);
  for (char& c : garbage) c = static_cast<char>(rng());
  WriteFileOrDie(path_, WithHeader("IVF8,Flat", garbage));
  ExpectCorruptionNaming(LoadStatus(path_, false), path_);
  ExpectCorruptionNaming(LoadStatus(path_, true), path_);
  WriteFileOrDie(path_, WithHeader("Flat", garbage));
  ExpectCorruptionNaming(LoadStatus(path_, false), path_);
}

TEST_F(VectorIndexFileTest, PayloadThatDisagreesWithTheHeaderIsCorruption) {
  const std::string payload = bytes_.substr(kIndexFileHeaderSize);
  for (const char* spec : {"Flat", "IVF9,Flat", "IVF8,PQ4"}) {
    SCOPED_TRACE(spec);
    WriteFileOrDie(path_, WithHeader(spec, payload));
    ExpectCorruptionNaming(LoadStatus(path_, false), path_);
    ExpectCorruptionNaming(LoadStatus(path_, true), path_);
  }
  WriteFileOrDie(path_, WithHeader("IVF8,Flat", payload, /*dim=*/32));
  ExpectCorruptionNaming(LoadStatus(path_, false), path_);
  WriteFileOrDie(path_, WithHeader("IVF8,Flat", payload));  // sanity: the honest header loads
  EXPECT_TRUE(LoadStatus(path_, false).ok());
  EXPECT_TRUE(LoadStatus(path_, true).ok());
}

TEST_F(VectorIndexFileTest, SaveIsAtomicAndLeavesNoTempFile) {
  // Overwrite the existing file with a different index; only the final file remains.
  auto flat = CreateOrDie("Flat", Metric::kInnerProduct);
  AddOrDie(flat.get(), GaussianVectors(5, kDim, 121), {1, 2, 3, 4, 5});
  ASSERT_TRUE(flat->Save(path_).ok());
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{"index.mnemo"});
  auto loaded = LoadOrDie(path_);
  EXPECT_EQ(loaded->spec(), "Flat");
  EXPECT_EQ(loaded->size(), 5);
  // Saving into a missing directory fails cleanly.
  EXPECT_FALSE(flat->Save(dir_.File("no/such/dir/index.mnemo")).ok());
}

TEST_F(VectorIndexTest, EmptyIndexesRoundTrip) {
  ScratchDir dir;
  for (const char* spec : {"Flat", "IVF8,PQ4"}) {
    auto index = CreateOrDie(spec, Metric::kL2);
    ASSERT_TRUE(index->Save(dir.File("empty.mnemo")).ok());
    auto loaded = LoadOrDie(dir.File("empty.mnemo"));
    EXPECT_EQ(loaded->size(), 0);
    EXPECT_EQ(loaded->is_trained(), index->is_trained());
  }
}


}  // namespace
}  // namespace vector_index_test
}  // namespace mnemo
