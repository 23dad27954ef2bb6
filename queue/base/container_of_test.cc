#include "queue/base/container_of.h"

#include <string>

#include "gtest/gtest.h"

namespace nbio {
namespace {

struct Hook {
  int tag = 0;
};

// Not standard-layout (a virtual function, a std::string before the hook), the
// case offsetof does not cover.
struct Element {
  virtual ~Element() = default;
  std::string name = "element";
  Hook first;
  double padding = 0;
  Hook second;
};

TEST(ContainerOfTest, RecoversTheEmbeddingObjectFromEitherHook) {
  Element e;
  EXPECT_EQ(internal::ContainerOf(&e.first, &Element::first), &e);
  EXPECT_EQ(internal::ContainerOf(&e.second, &Element::second), &e);
  const Hook* const_hook = &e.second;
  EXPECT_EQ(internal::ContainerOf(const_hook, &Element::second)->name,
            "element");
}

TEST(ContainerOfTest, OffsetMatchesTheAddressDifference) {
  Element e;
  EXPECT_EQ(internal::MemberOffset(&Element::second),
            reinterpret_cast<char*>(&e.second) - reinterpret_cast<char*>(&e));
}

}  // namespace
}  // namespace nbio
