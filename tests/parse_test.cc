// util/parse: strict integers from outside text.
#include <gtest/gtest.h>

#include "util/parse.h"

namespace mnemo {
namespace {

TEST(ParseTest, Int64AcceptsOnlyAWholeIntegerInRange) {
  int64_t v = 7;
  EXPECT_TRUE(ParseInt64("42", 0, 100, &v).ok());
  EXPECT_EQ(v, 42);
  EXPECT_TRUE(ParseInt64("-5", -10, 10, &v).ok());
  EXPECT_EQ(v, -5);
  EXPECT_TRUE(ParseInt64("9223372036854775807", 0, INT64_MAX, &v).ok());
  EXPECT_EQ(v, INT64_MAX);
  v = 7;
  for (const char* bad : {"", " 1", "1 ", "+1", "1x", "0x10", "1.0", "--1", "9223372036854775808",
                          "99999999999999999999999", "101", "-11"}) {
    Status s = ParseInt64(bad, -10, 100, &v);
    EXPECT_TRUE(s.IsInvalidArgument()) << "\"" << bad << "\"";
    EXPECT_EQ(v, 7) << "unchanged on error: \"" << bad << "\"";
  }
}

TEST(ParseTest, Int64ListSplitsOnCommas) {
  std::vector<int64_t> out;
  ASSERT_TRUE(ParseInt64List("1,4,16", 0, 100, &out).ok());
  EXPECT_EQ(out, (std::vector<int64_t>{1, 4, 16}));
  ASSERT_TRUE(ParseInt64List("3", 0, 100, &out).ok());
  EXPECT_EQ(out, (std::vector<int64_t>{3}));
  out = {9};
  for (const char* bad : {"", ",", "1,", ",1", "1,,2", "1, 2", "1,200"}) {
    EXPECT_TRUE(ParseInt64List(bad, 0, 100, &out).IsInvalidArgument()) << "\"" << bad << "\"";
    EXPECT_EQ(out, (std::vector<int64_t>{9})) << bad;
  }
}

}  // namespace
}  // namespace mnemo
