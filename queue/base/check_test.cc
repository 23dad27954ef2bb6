#include "queue/base/check.h"

#include "gtest/gtest.h"

namespace {

TEST(CheckTest, PassingCheckDoesNothing) {
  int evaluated = 0;
  NBIO_CHECK(++evaluated == 1);
  EXPECT_EQ(evaluated, 1);  // the condition is evaluated exactly once
}

TEST(CheckDeathTest, FailingCheckAbortsWithConditionAndMessage) {
  EXPECT_DEATH(NBIO_CHECK(1 + 1 == 3), "check failed: 1 \\+ 1 == 3");
  EXPECT_DEATH(NBIO_CHECK_MSG(false, "the reason"),
               "check_test.cc:[0-9]+: check failed: false \\(the reason\\)");
}

}  // namespace
