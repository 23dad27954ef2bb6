#include "queue/intrusive_list.h"

#include <algorithm>
#include <cstdint>
#include <list>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace nbio {
namespace {

struct Node {
  explicit Node(int v = 0) : value(v) {}
  int value;
  ListHook hook;
  ListHook other_hook;  // a second list through the same object
};

using List = IntrusiveList<Node, &Node::hook>;
using OtherList = IntrusiveList<Node, &Node::other_hook>;

std::vector<int> Values(const List& list) {
  std::vector<int> out;
  for (const Node& n : list) out.push_back(n.value);
  return out;
}

TEST(IntrusiveListTest, EmptyList) {
  List list;
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.size(), 0u);
  EXPECT_EQ(list.PopFront(), nullptr);
  EXPECT_EQ(list.PopBack(), nullptr);
  EXPECT_TRUE(list.begin() == list.end());
}

TEST(IntrusiveListTest, OneElement) {
  List list;
  Node a(1);
  EXPECT_FALSE(a.hook.is_linked());
  list.PushBack(a);
  EXPECT_TRUE(a.hook.is_linked());
  EXPECT_FALSE(list.empty());
  EXPECT_EQ(&list.front(), &a);
  EXPECT_EQ(&list.back(), &a);
  EXPECT_EQ(list.PopBack(), &a);
  EXPECT_FALSE(a.hook.is_linked());
  EXPECT_TRUE(list.empty());
}

TEST(IntrusiveListTest, PushAtBothEndsKeepsOrder) {
  Node a(1), b(2), c(3), d(4);
  List list;
  list.PushBack(b);
  list.PushFront(a);
  list.PushBack(c);
  list.InsertBefore(list.end(), d);
  EXPECT_EQ(Values(list), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(list.PopFront(), &a);
  EXPECT_EQ(list.PopBack(), &d);
  EXPECT_EQ(Values(list), (std::vector<int>{2, 3}));
}

TEST(IntrusiveListTest, UnlinkThroughHookWithoutTheList) {
  Node a(1), b(2), c(3);
  List list;
  list.PushBack(a);
  list.PushBack(b);
  list.PushBack(c);
  b.hook.Unlink();
  EXPECT_FALSE(b.hook.is_linked());
  EXPECT_EQ(Values(list), (std::vector<int>{1, 3}));
  b.hook.Unlink();  // a no-op when not linked
  EXPECT_EQ(Values(list), (std::vector<int>{1, 3}));
}

TEST(IntrusiveListTest, HookUnlinksWhenDestroyed) {
  List list;
  Node a(1);
  {
    Node b(2);
    list.PushBack(a);
    list.PushBack(b);
  }
  EXPECT_EQ(Values(list), (std::vector<int>{1}));
}

TEST(IntrusiveListTest, ListUnlinksAllWhenDestroyed) {
  Node a(1), b(2);
  {
    List list;
    list.PushBack(a);
    list.PushBack(b);
  }
  EXPECT_FALSE(a.hook.is_linked());
  EXPECT_FALSE(b.hook.is_linked());
}

TEST(IntrusiveListTest, UnlinkCurrentWhileIterating) {
  std::vector<std::unique_ptr<Node>> nodes;
  List list;
  for (int i = 0; i < 10; ++i) {
    nodes.push_back(std::make_unique<Node>(i));
    list.PushBack(*nodes.back());
  }
  // Unlink the odd ones, and destroy one of them, from inside the loop.
  for (Node& n : list) {
    if (n.value % 2 == 1) n.hook.Unlink();
    if (n.value == 5) nodes[5].reset();
  }
  EXPECT_EQ(Values(list), (std::vector<int>{0, 2, 4, 6, 8}));
  // Drain everything from inside the loop.
  int seen = 0;
  for (Node& n : list) {
    List::Remove(n);
    ++seen;
  }
  EXPECT_EQ(seen, 5);
  EXPECT_TRUE(list.empty());
}

TEST(IntrusiveListTest, OneObjectOnTwoLists) {
  Node a(1), b(2);
  List list;
  OtherList other;
  list.PushBack(a);
  list.PushBack(b);
  other.PushBack(b);
  other.PushBack(a);
  a.hook.Unlink();
  EXPECT_EQ(Values(list), (std::vector<int>{2}));
  EXPECT_EQ(&other.front(), &b);
  EXPECT_EQ(&other.back(), &a);
  EXPECT_EQ(other.size(), 2u);
}

TEST(IntrusiveListTest, SpliceAndMove) {
  Node a(1), b(2), c(3);
  List x, y;
  x.PushBack(a);
  y.PushBack(b);
  y.PushBack(c);
  x.Splice(y);
  EXPECT_TRUE(y.empty());
  EXPECT_EQ(Values(x), (std::vector<int>{1, 2, 3}));
  x.Splice(x);  // self-splice is a no-op
  EXPECT_EQ(Values(x), (std::vector<int>{1, 2, 3}));

  List moved(std::move(x));
  EXPECT_TRUE(x.empty());  // NOLINT: testing the moved-from state
  EXPECT_EQ(Values(moved), (std::vector<int>{1, 2, 3}));
  y = std::move(moved);
  EXPECT_EQ(Values(y), (std::vector<int>{1, 2, 3}));
  b.hook.Unlink();  // hooks still point at valid neighbours after the moves
  EXPECT_EQ(Values(y), (std::vector<int>{1, 3}));
}

TEST(IntrusiveListTest, MoveToBack) {
  Node a(1), b(2);
  List x, y;
  x.PushBack(a);
  x.PushBack(b);
  y.MoveToBack(a);
  x.MoveToBack(b);  // already last: stays
  EXPECT_EQ(Values(x), (std::vector<int>{2}));
  EXPECT_EQ(Values(y), (std::vector<int>{1}));
}

// Random operations, every result compared with std::list<int> holding the
// ids of the linked nodes in the same order.
TEST(IntrusiveListTest, MatchesStdListModel) {
  constexpr int kNodes = 64;
  constexpr int kOps = 2'000'000;
  std::vector<Node> nodes(kNodes);
  for (int i = 0; i < kNodes; ++i) nodes[i].value = i;
  List list;
  std::list<int> model;
  std::mt19937 rng(20261129);
  auto pick = [&] { return static_cast<int>(rng() % kNodes); };

  for (int op = 0; op < kOps; ++op) {
    const int n = pick();
    const bool linked = std::find(model.begin(), model.end(), n) != model.end();
    ASSERT_EQ(nodes[n].hook.is_linked(), linked) << "op " << op;
    switch (rng() % 7) {
      case 0:
        if (!linked) {
          list.PushBack(nodes[n]);
          model.push_back(n);
        }
        break;
      case 1:
        if (!linked) {
          list.PushFront(nodes[n]);
          model.push_front(n);
        }
        break;
      case 2: {
        Node* got = list.PopFront();
        if (model.empty()) {
          ASSERT_EQ(got, nullptr);
        } else {
          ASSERT_NE(got, nullptr);
          ASSERT_EQ(got->value, model.front());
          model.pop_front();
        }
        break;
      }
      case 3: {
        Node* got = list.PopBack();
        if (model.empty()) {
          ASSERT_EQ(got, nullptr);
        } else {
          ASSERT_NE(got, nullptr);
          ASSERT_EQ(got->value, model.back());
          model.pop_back();
        }
        break;
      }
      case 4:
        nodes[n].hook.Unlink();
        model.remove(n);
        break;
      case 5:
        // Insert before a random linked node (or at the end).
        if (!linked) {
          const int at = pick();
          auto it = std::find(model.begin(), model.end(), at);
          if (it == model.end()) {
            list.InsertBefore(list.end(), nodes[n]);
          } else {
            list.InsertBefore(list.IteratorTo(nodes[at]), nodes[n]);
          }
          model.insert(it, n);
        }
        break;
      case 6:
        list.MoveToBack(nodes[n]);
        model.remove(n);
        model.push_back(n);
        break;
    }
    ASSERT_EQ(list.empty(), model.empty());
    if (!model.empty()) {
      ASSERT_EQ(list.front().value, model.front());
      ASSERT_EQ(list.back().value, model.back());
    }
    if (op % 1024 == 0) {
      ASSERT_EQ(Values(list), std::vector<int>(model.begin(), model.end()));
    }
  }
  ASSERT_EQ(Values(list), std::vector<int>(model.begin(), model.end()));
}

}  // namespace
}  // namespace nbio
