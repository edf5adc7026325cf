#include "lm/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "util/half.h"
#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using testing::ScratchDir;
using testing::WriteFileOrDie;

// The on-disk layout built by hand: u64 little-endian header length, header, data.
std::string RawFile(const std::string& header, const std::string& data) {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  return out + header + data;
}

std::string Bytes(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

// Opens `contents` written to a scratch file and returns the status; `path` receives the file name.
Status OpenRaw(const ScratchDir& dir, const std::string& contents, std::string* path) {
  *path = dir.File("model.safetensors");
  WriteFileOrDie(*path, contents);
  std::unique_ptr<SafetensorsFile> file;
  return SafetensorsFile::Open(*path, &file);
}

void ExpectCorruptionNamingFile(const Status& s, const std::string& path, const std::string& problem) {
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find(path), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(problem), std::string::npos) << s.ToString();
}

TEST(SafetensorsTest, RoundTripIsBitExact) {
  ScratchDir dir;
  const float nan_with_payload = [] {
    uint32_t bits = 0x7FC12345u;
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
  }();
  const std::vector<float> f32 = {0.0f, -0.0f, 1.5f, -3.25e-39f /* subnormal */,
                                  std::numeric_limits<float>::infinity(), nan_with_payload};
  const std::vector<uint16_t> f16 = {0x0000, 0x8000, 0x3C00, 0x7BFF, 0x0001, 0x7C00, 0x7E01, 0xFFFF};
  const std::vector<uint16_t> bf16 = {0x3F80, 0xBF80, 0x7F80, 0x0001, 0x7FC1, 0x1234};
  const std::vector<int64_t> i64 = {std::numeric_limits<int64_t>::min(), -1, 0, 1,
                                    std::numeric_limits<int64_t>::max(), 42};
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "caf\xC3\xA9 \"quoted\""}};
  const std::string path = dir.File("rt.safetensors");
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"w.f32", DType::kF32, {2, 3}, f32.data(), f32.size() * 4},
                                {"w.f16", DType::kF16, {8}, f16.data(), f16.size() * 2},
                                {"w.bf16", DType::kBF16, {3, 2}, bf16.data(), bf16.size() * 2},
                                {"w.i64", DType::kI64, {6, 1}, i64.data(), i64.size() * 8}},
                               metadata)
                  .ok());

  std::unique_ptr<SafetensorsFile> file;
  Status s = SafetensorsFile::Open(path, &file);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(file->path(), path);
  EXPECT_EQ(file->metadata(), metadata);
  ASSERT_EQ(file->tensors().size(), 4u);

  const TensorView* t = file->Find("w.f32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kF32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(Bytes(t->data, t->nbytes), Bytes(f32.data(), f32.size() * 4));
  t = file->Find("w.f16");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kF16);
  EXPECT_EQ(Bytes(t->data, t->nbytes), Bytes(f16.data(), f16.size() * 2));
  t = file->Find("w.bf16");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kBF16);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(Bytes(t->data, t->nbytes), Bytes(bf16.data(), bf16.size() * 2));
  t = file->Find("w.i64");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kI64);
  EXPECT_EQ(Bytes(t->data, t->nbytes), Bytes(i64.data(), i64.size() * 8));
  EXPECT_EQ(file->Find("missing"), nullptr);
}

TEST(SafetensorsTest, WriterFollowsReferenceLayout) {
  ScratchDir dir;
  const std::vector<float> a = {1, 2, 3};
  const std::vector<int32_t> b = {7};
  const std::string path = dir.File("layout.safetensors");
  // "zeta" before "alpha": the writer keeps the caller's order rather than sorting.
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"zeta", DType::kF32, {3}, a.data(), 12}, {"alpha", DType::kI32, {}, b.data(), 4}},
                               {})
                  .ok());
  std::string raw;
  ASSERT_TRUE(ReadFileToString(path, &raw).ok());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ(n % 8, 0u) << "header must be padded to a multiple of 8";
  const std::string header = raw.substr(8, n);
  const std::string unpadded = header.substr(0, header.find_last_not_of(' ') + 1);
  EXPECT_EQ(unpadded,
            R"({"zeta":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
            R"("alpha":{"dtype":"I32","shape":[],"data_offsets":[12,16]}})");
  EXPECT_EQ(header.find("__metadata__"), std::string::npos);
  EXPECT_EQ(raw.size(), 8 + n + 16);
  EXPECT_EQ(raw.substr(8 + n), Bytes(a.data(), 12) + Bytes(b.data(), 4));
}

TEST(SafetensorsTest, HandBuiltReferenceFileLoads) {
  ScratchDir dir;
  const float a[4] = {1.0f, -2.0f, 0.5f, 8.0f};
  const int32_t b[2] = {-7, 123456};
  // Entries out of data order, a metadata block, trailing-space padding and an unaligned data start.
  const std::string header =
      R"({"b":{"dtype":"I32","shape":[2],"data_offsets":[16,24]},"__metadata__":{"format":"pt"},)"
      R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"e":{"dtype":"U8","shape":[0,5],)"
      R"("data_offsets":[24,24]}}   )";
  std::string path;
  const std::string contents = RawFile(header, Bytes(a, 16) + Bytes(b, 8));
  path = dir.File("hand.safetensors");
  WriteFileOrDie(path, contents);
  std::unique_ptr<SafetensorsFile> file;
  Status s = SafetensorsFile::Open(path, &file);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(file->tensors().size(), 3u);
  EXPECT_EQ(file->tensors()[0].name, "a");  // data-buffer order
  EXPECT_EQ(file->tensors()[1].name, "b");
  EXPECT_EQ(file->tensors()[2].name, "e");
  EXPECT_EQ(file->metadata().at("format"), "pt");
  const TensorView* ta = file->Find("a");
  ASSERT_NE(ta, nullptr);
  float got[4];
  std::memcpy(got, ta->data, sizeof(got));
  EXPECT_EQ(got[1], -2.0f);
  EXPECT_EQ(got[3], 8.0f);
  const TensorView* tb = file->Find("b");
  ASSERT_NE(tb, nullptr);
  int32_t gotb[2];
  std::memcpy(gotb, tb->data, sizeof(gotb));
  EXPECT_EQ(gotb[0], -7);
  EXPECT_EQ(gotb[1], 123456);
  const TensorView* te = file->Find("e");
  ASSERT_NE(te, nullptr);
  EXPECT_EQ(te->nbytes, 0u);
  EXPECT_EQ(te->shape, (std::vector<int64_t>{0, 5}));
}

TEST(SafetensorsTest, EmptyFileWithNoTensors) {
  ScratchDir dir;
  const std::string path = dir.File("empty.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {}, {{"k", "v"}}).ok());
  std::unique_ptr<SafetensorsFile> file;
  ASSERT_TRUE(SafetensorsFile::Open(path, &file).ok());
  EXPECT_TRUE(file->tensors().empty());
  EXPECT_EQ(file->metadata().at("k"), "v");
}

TEST(SafetensorsTest, MovedFileKeepsViewsValid) {
  ScratchDir dir;
  const std::vector<float> a = {3, 4};
  const std::string path = dir.File("m.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", DType::kF32, {2}, a.data(), 8}}, {}).ok());
  std::unique_ptr<SafetensorsFile> file;
  ASSERT_TRUE(SafetensorsFile::Open(path, &file).ok());
  SafetensorsFile moved(std::move(*file));
  file.reset();  // Destroying the moved-from object must not unmap.
  const TensorView* t = moved.Find("a");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(Bytes(t->data, 8), Bytes(a.data(), 8));
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  ScratchDir dir;
  std::unique_ptr<SafetensorsFile> file;
  EXPECT_TRUE(SafetensorsFile::Open(dir.File("nope.safetensors"), &file).IsNotFound());
}

TEST(SafetensorsTest, DTypeNamesAndSizes) {
  const std::pair<const char*, size_t> expected[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8},
                                                     {"I64", 8}, {"I32", 4}, {"I16", 2},  {"I8", 1},
                                                     {"U8", 1},  {"BOOL", 1}};
  for (const auto& [name, size] : expected) {
    DType d;
    ASSERT_TRUE(ParseDType(name, &d)) << name;
    EXPECT_STREQ(DTypeName(d), name);
    EXPECT_EQ(DTypeSize(d), size) << name;
  }
  DType d;
  EXPECT_FALSE(ParseDType("f32", &d));
  EXPECT_FALSE(ParseDType("F8_E4M3", &d));
}

// ---- Writer argument checks.

TEST(SafetensorsTest, WriteRejectsSizeMismatch) {
  ScratchDir dir;
  const float a[3] = {};
  Status s = WriteSafetensors(dir.File("x"), {{"a", DType::kF32, {2, 2}, a, 12}}, {});
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_FALSE(FileExists(dir.File("x")));
}

TEST(SafetensorsTest, WriteRejectsDuplicateAndReservedNames) {
  ScratchDir dir;
  const float a[1] = {};
  EXPECT_TRUE(WriteSafetensors(dir.File("x"), {{"a", DType::kF32, {1}, a, 4}, {"a", DType::kF32, {1}, a, 4}}, {})
                  .IsInvalidArgument());
  EXPECT_TRUE(WriteSafetensors(dir.File("x"), {{"__metadata__", DType::kF32, {1}, a, 4}}, {}).IsInvalidArgument());
  EXPECT_TRUE(WriteSafetensors(dir.File("x"), {{"a", DType::kF32, {-1}, a, 4}}, {}).IsInvalidArgument());
  EXPECT_TRUE(WriteSafetensors(dir.File("x"), {{"bad\xFF", DType::kF32, {1}, a, 4}}, {}).IsInvalidArgument());
}

// ---- Malformed files: each must be Corruption naming the file and the problem.

const char kGoodEntry[] = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

TEST(SafetensorsTest, TruncatedFile) {
  ScratchDir dir;
  std::string path;
  ExpectCorruptionNamingFile(OpenRaw(dir, std::string("\x05\x00\x00", 3), &path), path, "shorter than");
}

TEST(SafetensorsTest, OversizedHeader) {
  ScratchDir dir;
  std::string raw = RawFile("{}", "");
  const uint64_t n = (100ull << 20) + 1;
  for (int i = 0; i < 8; ++i) raw[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  std::string path;
  ExpectCorruptionNamingFile(OpenRaw(dir, raw, &path), path, "oversized header");
}

TEST(SafetensorsTest, HeaderLengthPastEnd) {
  ScratchDir dir;
  std::string raw = RawFile("{}", "");
  raw[0] = 100;
  std::string path;
  ExpectCorruptionNamingFile(OpenRaw(dir, raw, &path), path, "exceeds file size");
}

TEST(SafetensorsTest, NotJson) {
  ScratchDir dir;
  std::string path;
  ExpectCorruptionNamingFile(OpenRaw(dir, RawFile("{\"a\": nope", ""), &path), path, "not valid JSON");
  ExpectCorruptionNamingFile(OpenRaw(dir, RawFile("[1, 2]", ""), &path), path, "not a JSON object");
  ExpectCorruptionNamingFile(OpenRaw(dir, RawFile("", ""), &path), path, "not valid JSON");
}

TEST(SafetensorsTest, UnknownDtype) {
  ScratchDir dir;
  std::string path;
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
              &path),
      path, "unknown dtype \"F12\"");
}

TEST(SafetensorsTest, ShapeSizeMismatch) {
  ScratchDir dir;
  std::string path;
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
              &path),
      path, "byte length 8 != 12");
  // A shape whose byte size overflows 64 bits must not wrap around to a small number.
  ExpectCorruptionNamingFile(
      OpenRaw(dir,
              RawFile(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", ""),
              &path),
      path, "overflows");
}

TEST(SafetensorsTest, NegativeDimension) {
  ScratchDir dir;
  std::string path;
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F32","shape":[-2,-1],"data_offsets":[0,8]}})", std::string(8, '\0')),
              &path),
      path, "negative");
}

TEST(SafetensorsTest, OffsetsOutOfRange) {
  ScratchDir dir;
  std::string path;
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(8, '\0')),
              &path),
      path, "out of the 8-byte data buffer");
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", std::string(8, '\0')),
              &path),
      path, "begin 8 > end 4");
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", std::string(8, '\0')),
              &path),
      path, "non-negative integers");
}

TEST(SafetensorsTest, OverlappingTensors) {
  ScratchDir dir;
  std::string path;
  ExpectCorruptionNamingFile(
      OpenRaw(dir,
              RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                      std::string(12, '\0')),
              &path),
      path, "overlap");
  // A tensor nested inside a longer one also overlaps.
  ExpectCorruptionNamingFile(
      OpenRaw(dir,
              RawFile(R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                      R"("b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                      R"("c":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}})",
                      std::string(16, '\0')),
              &path),
      path, "overlap");
}

TEST(SafetensorsTest, DuplicateTensorName) {
  ScratchDir dir;
  std::string path;
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(std::string("{") + kGoodEntry + "," + kGoodEntry + "}", std::string(8, '\0')), &path),
      path, "'a' twice");
}

TEST(SafetensorsTest, MissingField) {
  ScratchDir dir;
  std::string path;
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')), &path), path,
      "missing \"dtype\"");
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", std::string(8, '\0')), &path), path,
      "missing \"shape\"");
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F32","shape":[2]}})", std::string(8, '\0')), &path), path,
      "missing \"data_offsets\"");
}

TEST(SafetensorsTest, WrongFieldTypes) {
  ScratchDir dir;
  std::string path;
  const std::string data(8, '\0');
  ExpectCorruptionNamingFile(OpenRaw(dir, RawFile(R"({"a":[1,2]})", data), &path), path, "not a JSON object");
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", data), &path), path,
      "\"dtype\" is not a string");
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", data), &path), path,
      "\"shape\" is not an array");
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", data), &path), path,
      "non-integer dimension");
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}})", data), &path), path,
      "array of two integers");
  ExpectCorruptionNamingFile(
      OpenRaw(dir, RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":["0","8"]}})", data), &path), path,
      "non-negative integers");
  ExpectCorruptionNamingFile(OpenRaw(dir, RawFile(R"({"__metadata__":{"k":1}})", ""), &path), path,
                             "is not a string");
  ExpectCorruptionNamingFile(OpenRaw(dir, RawFile(R"({"__metadata__":"x"})", ""), &path), path,
                             "__metadata__ is not a JSON object");
}

// Every prefix of a valid file and random byte flips must yield a Status, never a crash or an
// out-of-bounds view (run under ASan to make the latter loud).
TEST(SafetensorsTest, TruncationsAndByteFlipsNeverCrash) {
  ScratchDir dir;
  const std::vector<float> a = {1, 2, 3, 4, 5};
  const std::vector<uint16_t> b = {1, 2, 3};
  const std::string good = dir.File("good.safetensors");
  ASSERT_TRUE(WriteSafetensors(good, {{"a", DType::kF32, {5}, a.data(), 20}, {"b", DType::kF16, {3}, b.data(), 6}},
                               {{"format", "pt"}})
                  .ok());
  std::string raw;
  ASSERT_TRUE(ReadFileToString(good, &raw).ok());
  const std::string path = dir.File("bad.safetensors");

  // Returns whether the file opened.
  auto check = [&](const std::string& contents) {
    WriteFileOrDie(path, contents);
    std::unique_ptr<SafetensorsFile> file;
    Status s = SafetensorsFile::Open(path, &file);
    if (!s.ok()) {
      EXPECT_TRUE(s.IsCorruption()) << s.ToString();
      return false;
    }
    uint64_t sum = 0;
    for (const TensorView& t : file->tensors()) {
      EXPECT_EQ(t.nbytes, [&] {
        size_t n = DTypeSize(t.dtype);
        for (int64_t d : t.shape) n *= static_cast<size_t>(d);
        return n;
      }());
      for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
    }
    (void)sum;
    return true;
  };

  int ok_truncations = 0;
  for (size_t len = 0; len < raw.size(); ++len) {
    if (check(raw.substr(0, len))) ++ok_truncations;
  }
  // Cutting off data bytes always leaves some tensor out of range; only the full file is valid.
  EXPECT_EQ(ok_truncations, 0);

  std::mt19937 rng(20240229);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string flipped = raw;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      // Bias towards the length prefix and header, where flips change the parse.
      const size_t limit = (rng() % 4 == 0) ? flipped.size() : std::min<size_t>(flipped.size(), 8 + 120);
      flipped[rng() % limit] ^= static_cast<char>(1u << (rng() % 8));
    }
    check(flipped);
  }
}

// ---- half / bfloat16 conversions.

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

TEST(HalfTest, KnownValues) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65519.99f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);  // The tie rounds to even, which is infinity.
  EXPECT_EQ(FloatToHalf(1e10f), 0x7C00);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // Smallest subnormal.
  EXPECT_EQ(FloatToHalf(std::ldexp(1023.0f, -24)), 0x03FF);  // Largest subnormal.
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // Smallest normal.
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // Tie between 0 and 2^-24: even is 0.
  EXPECT_EQ(FloatToHalf(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // Tie between 1 and 2 (x 2^-24).
  EXPECT_EQ(FloatToHalf(std::ldexp(2047.0f, -25)), 0x0400);  // Rounds up out of the subnormals.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // Tie: to even.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(3.0f, -11)), 0x3C02);  // Tie: to even (up).
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3C01);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xFC00);
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
  // A signalling NaN whose payload lives only in the dropped low bits must stay NaN.
  EXPECT_NE(FloatToHalf(FromBits(0x7F800001u)) & 0x03FF, 0);

  EXPECT_EQ(FloatBits(HalfToFloat(0x8000)), 0x80000000u);
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
}

TEST(HalfTest, EveryHalfDecodesExactlyAndRoundTrips) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    const uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF;
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    if (e == 31) {
      EXPECT_TRUE(m == 0 ? std::isinf(f) : std::isnan(f)) << h;
      if (m != 0) {
        EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << h;
      }
      continue;
    }
    const double expected = sign * (e == 0 ? std::ldexp(m, -24) : std::ldexp(1024.0 + m, static_cast<int>(e) - 25));
    ASSERT_EQ(static_cast<double>(f), expected) << h;
    ASSERT_EQ(FloatToHalf(f), h) << h;
  }
}

// For random finite floats, the chosen half is a nearest one and ties go to the even mantissa.
TEST(HalfTest, FloatToHalfRoundsToNearestEven) {
  std::mt19937 rng(7);
  for (int i = 0; i < 1000000; ++i) {
    // Concentrate on the half range (|x| < 2^16), including the subnormal region.
    const int exponent = static_cast<int>(rng() % 44) - 28;
    const float f = std::ldexp(1.0f + static_cast<float>(rng() % (1 << 23)) / (1 << 23), exponent) *
                    ((rng() & 1) ? -1.0f : 1.0f);
    if (std::fabs(f) >= 65520.0f) continue;
    const uint16_t h = FloatToHalf(f);
    const double err = std::fabs(static_cast<double>(HalfToFloat(h)) - f);
    for (int delta : {-1, 1}) {
      const int magnitude = (h & 0x7FFF) + delta;
      if (magnitude < 0 || magnitude >= 0x7C00) continue;
      const uint16_t other = static_cast<uint16_t>((h & 0x8000) | magnitude);
      const double other_err = std::fabs(static_cast<double>(HalfToFloat(other)) - f);
      ASSERT_LE(err, other_err) << f;
      if (err == other_err) {
        ASSERT_EQ(h & 1, 0) << "tie must go to even for " << f;
      }
    }
  }
}

TEST(Bf16Test, KnownValuesAndRounding) {
  EXPECT_EQ(FloatToBf16(0.0f), 0x0000);
  EXPECT_EQ(FloatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);  // Tie: to even.
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(3.0f, -8)), 0x3F82);  // Tie: to even (up).
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7F80);  // Rounds up to infinity.
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(FloatToBf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(FloatToBf16(FromBits(0x00010000u)), 0x0001);  // Smallest bf16 subnormal is exact.
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(FromBits(0x7F800001u)))));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(b));
    ASSERT_EQ(FloatBits(f), b << 16);
    if (!std::isnan(f)) {
      ASSERT_EQ(FloatToBf16(f), b);
    }
  }
}

}  // namespace
}  // namespace mnemo
