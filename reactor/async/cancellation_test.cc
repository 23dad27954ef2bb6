// CancellationSource / CancellationToken / CancellationRegistration: every
// state (before, during and after a cancel), re-entrancy from inside
// callbacks, and handle lifetimes. No loop needed: cancellation is
// synchronous.
#include "reactor/async/cancellation.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "reactor/testing/loop_test_util.h"

namespace nbio {
namespace {

TEST(CancellationTest, CallbacksRunOnceInOrderSynchronously) {
  CancellationSource source;
  CancellationToken token = source.token();
  std::string log;
  CancellationRegistration a =
      token.Register([&](const absl::Status&) { log += "a"; });
  CancellationRegistration b =
      token.Register([&](const absl::Status&) { log += "b"; });
  CancellationRegistration c =
      token.Register([&](const absl::Status&) { log += "c"; });
  EXPECT_FALSE(token.is_cancelled());
  EXPECT_TRUE(token.reason().ok());
  EXPECT_TRUE(a.is_registered());
  EXPECT_TRUE(source.Cancel());
  EXPECT_EQ(log, "abc");
  EXPECT_TRUE(token.is_cancelled());
  EXPECT_TRUE(source.is_cancelled());
  EXPECT_TRUE(absl::IsCancelled(token.reason()));
  EXPECT_FALSE(a.is_registered());
  EXPECT_FALSE(c.is_registered());
}

TEST(CancellationTest, DoubleCancelIsANoOp) {
  CancellationSource source;
  int runs = 0;
  CancellationRegistration r =
      source.token().Register([&](const absl::Status&) { ++runs; });
  EXPECT_TRUE(source.Cancel(absl::AbortedError("first")));
  EXPECT_FALSE(source.Cancel(absl::UnavailableError("second")));
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(source.token().reason(), absl::AbortedError("first"));
}

TEST(CancellationTest, CallbackGetsTheReason) {
  CancellationSource source;
  absl::Status seen;
  CancellationRegistration r =
      source.token().Register([&](const absl::Status& why) { seen = why; });
  source.Cancel(absl::DeadlineExceededError("late"));
  EXPECT_EQ(seen, absl::DeadlineExceededError("late"));
}

TEST(CancellationTest, RegisterOnCancelledTokenRunsAtOnce) {
  CancellationSource source;
  source.Cancel();
  bool ran = false;
  CancellationRegistration r =
      source.token().Register([&](const absl::Status& why) {
        EXPECT_TRUE(absl::IsCancelled(why));
        ran = true;
      });
  EXPECT_TRUE(ran);
  EXPECT_FALSE(r.is_registered());
}

TEST(CancellationTest, DefaultTokenIsNeverCancelledAndDropsCallbacks) {
  CancellationToken token;
  EXPECT_FALSE(token.can_be_cancelled());
  EXPECT_FALSE(token.is_cancelled());
  EXPECT_TRUE(token.reason().ok());
  bool destroyed = false;
  bool ran = false;
  CancellationRegistration r = token.Register(
      [&, f = DestroyFlag(&destroyed)](const absl::Status&) { ran = true; });
  EXPECT_FALSE(r.is_registered());
  EXPECT_TRUE(destroyed);
  EXPECT_FALSE(ran);
}

TEST(CancellationTest, UnregisteredAndDestroyedHandlesDoNotRun) {
  CancellationSource source;
  std::string log;
  CancellationRegistration a =
      source.token().Register([&](const absl::Status&) { log += "a"; });
  bool b_destroyed = false;
  auto b = std::make_unique<CancellationRegistration>(source.token().Register(
      [&, f = DestroyFlag(&b_destroyed)](const absl::Status&) { log += "b"; }));
  CancellationRegistration c =
      source.token().Register([&](const absl::Status&) { log += "c"; });
  a.Unregister();
  EXPECT_FALSE(a.is_registered());
  a.Unregister();  // twice: harmless
  b.reset();
  EXPECT_TRUE(b_destroyed);  // captures released at unregistration
  source.Cancel();
  EXPECT_EQ(log, "c");
}

TEST(CancellationTest, CancelFromInsideOwnCallback) {
  CancellationSource source;
  std::string log;
  CancellationRegistration a =
      source.token().Register([&](const absl::Status&) {
        log += "a";
        EXPECT_FALSE(source.Cancel());  // already cancelled: no recursion
        log += "A";
      });
  CancellationRegistration b =
      source.token().Register([&](const absl::Status&) { log += "b"; });
  EXPECT_TRUE(source.Cancel());
  EXPECT_EQ(log, "aAb");
}

TEST(CancellationTest, CallbackUnregistersALaterOne) {
  CancellationSource source;
  std::string log;
  CancellationRegistration b;
  CancellationRegistration a =
      source.token().Register([&](const absl::Status&) {
        log += "a";
        b.Unregister();
      });
  b = source.token().Register([&](const absl::Status&) { log += "b"; });
  source.Cancel();
  EXPECT_EQ(log, "a");
}

TEST(CancellationTest, CallbackDestroysItsOwnHandle) {
  CancellationSource source;
  bool destroyed = false;
  std::string log;
  auto own = std::make_unique<CancellationRegistration>();
  *own = source.token().Register(
      [&, f = DestroyFlag(&destroyed)](const absl::Status&) {
        own.reset();  // the callback has been moved out of the handle
        EXPECT_FALSE(destroyed);  // still running: captures alive
        log += "a";
      });
  CancellationRegistration b =
      source.token().Register([&](const absl::Status&) { log += "b"; });
  source.Cancel();
  EXPECT_EQ(log, "ab");
  EXPECT_TRUE(destroyed);
}

TEST(CancellationTest, CallbackRegistersAnotherWhichRunsAtOnce) {
  CancellationSource source;
  std::string log;
  CancellationRegistration late;
  CancellationRegistration a =
      source.token().Register([&](const absl::Status&) {
        log += "a(";
        late =
            source.token().Register([&](const absl::Status&) { log += "n"; });
        log += ")";
      });
  CancellationRegistration b =
      source.token().Register([&](const absl::Status&) { log += "b"; });
  source.Cancel();
  EXPECT_EQ(log, "a(n)b");
  EXPECT_FALSE(late.is_registered());
}

TEST(CancellationTest, CancelAnotherSourceFromInsideACancelCallback) {
  CancellationSource outer;
  CancellationSource inner;
  std::string log;
  CancellationRegistration i1 =
      inner.token().Register([&](const absl::Status&) { log += "i1"; });
  CancellationRegistration o1 =
      outer.token().Register([&](const absl::Status&) {
        log += "o1(";
        EXPECT_TRUE(inner.Cancel());
        log += ")";
      });
  // And an inner callback that cancels the outer source, which is already
  // cancelling: a no-op.
  CancellationRegistration i2 =
      inner.token().Register([&](const absl::Status&) {
        log += "i2";
        EXPECT_FALSE(outer.Cancel());
      });
  CancellationRegistration o2 =
      outer.token().Register([&](const absl::Status&) { log += "o2"; });
  outer.Cancel();
  EXPECT_EQ(log, "o1(i1i2)o2");
}

TEST(CancellationTest, CallbackDestroysSourceTokensAndHandles) {
  auto source = std::make_unique<CancellationSource>();
  auto token = std::make_unique<CancellationToken>(source->token());
  std::string log;
  std::vector<CancellationRegistration> regs;
  regs.push_back(token->Register([&](const absl::Status&) {
    log += "a";
    token.reset();
    source.reset();  // this very Cancel() is running on it
  }));
  regs.push_back(token->Register([&](const absl::Status&) {
    log += "b";
    regs.clear();  // every handle, its own included
  }));
  regs.push_back(token->Register([&](const absl::Status&) { log += "c"; }));
  CancellationSource* raw = source.get();
  raw->Cancel();
  EXPECT_EQ(log, "ab");  // c's handle was destroyed by b, before c ran
}

TEST(CancellationTest, MovedHandleKeepsItsPlaceAndMoveAssignUnregisters) {
  CancellationSource source;
  std::string log;
  CancellationRegistration a =
      source.token().Register([&](const absl::Status&) { log += "a"; });
  CancellationRegistration b =
      source.token().Register([&](const absl::Status&) { log += "b"; });
  CancellationRegistration c =
      source.token().Register([&](const absl::Status&) { log += "c"; });
  CancellationRegistration moved_b(std::move(b));
  EXPECT_FALSE(b.is_registered());  // NOLINT: testing moved-from state
  EXPECT_TRUE(moved_b.is_registered());
  // Assigning over a registered handle unregisters what it held.
  CancellationRegistration other =
      source.token().Register([&](const absl::Status&) { log += "x"; });
  other = std::move(c);
  std::vector<CancellationRegistration> many;
  for (int i = 0; i < 10; ++i) {  // vector growth moves them around
    many.push_back(
        source.token().Register([&](const absl::Status&) { log += "m"; }));
  }
  source.Cancel();
  EXPECT_EQ(log, "abcmmmmmmmmmm");
}

TEST(CancellationTest, HandleAndTokenOutliveTheSource) {
  CancellationRegistration r;
  CancellationToken token;
  {
    CancellationSource source;
    token = source.token();
    r = token.Register([](const absl::Status&) { ADD_FAILURE(); });
  }
  // Nobody can cancel any more: the token never will be.
  EXPECT_FALSE(token.is_cancelled());
  EXPECT_TRUE(r.is_registered());
  r.Unregister();
}

TEST(CancellationTest, LinkedSourceFollowsItsParent) {
  CancellationSource parent;
  CancellationSource child(parent.token());
  std::string log;
  CancellationRegistration c =
      child.token().Register([&](const absl::Status& why) {
        log += "child:" + std::string(why.message());
      });
  parent.Cancel(absl::CancelledError("shutdown"));
  EXPECT_EQ(log, "child:shutdown");
  EXPECT_TRUE(child.is_cancelled());
}

TEST(CancellationTest, LinkedChildCancelDoesNotReachParent) {
  CancellationSource parent;
  int parent_runs = 0;
  CancellationRegistration p =
      parent.token().Register([&](const absl::Status&) { ++parent_runs; });
  {
    CancellationSource child(parent.token());
    child.Cancel();
    EXPECT_TRUE(child.is_cancelled());
  }
  {
    // A linked child destroyed first leaves nothing behind on the parent.
    CancellationSource child(parent.token());
  }
  EXPECT_FALSE(parent.is_cancelled());
  parent.Cancel();
  EXPECT_EQ(parent_runs, 1);
}

TEST(CancellationTest, LinkedToCancelledParentStartsCancelled) {
  CancellationSource parent;
  parent.Cancel(absl::AbortedError("gone"));
  CancellationSource child(parent.token());
  EXPECT_TRUE(child.is_cancelled());
  EXPECT_EQ(child.token().reason(), absl::AbortedError("gone"));
}

}  // namespace
}  // namespace nbio
