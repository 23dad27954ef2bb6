#!/usr/bin/env bash
# Builds and tests this user workspace against the checkout it sits in, as
# `@nbio` (local_repository), then checks what the layout promises:
#  - a target that depends on @nbio//timers:timer_wheel alone, or on
#    @nbio//queue:mpsc_queue alone, pulls in nothing of nbio's reactor;
#  - an internal target (@nbio//reactor/sys:syscall) is refused by
#    visibility;
#  - README.md's list of public targets is exactly what Bazel lets this
#    workspace see.
# Prints Bazel's per-test lines and one line per check in the same form
# ("//LABEL   PASSED" / "FAILED"), so .ci/run counts them; exits non-zero
# when anything failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")" || exit 1
bazel=../../tools/bazel
status=0

"$bazel" test //... || status=1

# check NAME COMMAND...: one result line.
check() {
  local name="$1"
  shift
  if "$@"; then
    printf '%-60s PASSED\n' "//tests/external_workspace:${name}"
  else
    printf '%-60s FAILED\n' "//tests/external_workspace:${name}"
    status=1
  fi
}

# No target of @nbio//reactor (nor its sub-packages) among the dependencies.
reactor_free() {
  local target="$1" deps
  deps=$("$bazel" query "deps(${target})" 2>/dev/null) || {
    echo "bazel query deps(${target}) failed" >&2
    return 1
  }
  if grep -q '^@nbio//reactor' <<<"$deps"; then
    echo "${target} depends on the reactor:" >&2
    grep '^@nbio//reactor' <<<"$deps" >&2
    return 1
  fi
  # And it does reach the nbio target it names.
  grep -q '^@nbio//' <<<"$deps"
}
check timer_wheel_user_needs_no_reactor reactor_free //:timer_wheel_user_test
check mpsc_queue_user_needs_no_reactor reactor_free //:mpsc_queue_user_test

# The internal target must be refused, and for visibility, not another error.
internal_refused() {
  local out
  if out=$("$bazel" build //:uses_internal_target 2>&1); then
    echo "//:uses_internal_target built: @nbio//reactor/sys:syscall is visible" >&2
    return 1
  fi
  if ! grep -q 'is not visible from target' <<<"$out"; then
    echo "building //:uses_internal_target failed for another reason:" >&2
    echo "$out" | tail -20 >&2
    return 1
  fi
}
check internal_target_refused_by_visibility internal_refused

# The targets a user can depend on are exactly README.md's list: every rule
# of @nbio that this workspace may see (tests and testonly targets aside),
# against the labels between the README's public-targets markers.
readme_lists_public_targets() {
  local visible listed
  # Named folders, not @nbio//...: that would walk into the checkout's
  # bazel-* output links and into this very workspace.
  local all='(@nbio//:all + @nbio//queue/... + @nbio//timers/... + @nbio//reactor/... + @nbio//echo/... + @nbio//tools/... + @nbio//tests:all)'
  visible=$("$bazel" query \
    "kind('cc_library|cc_binary', visible(//:timer_wheel_user_test, ${all})) except attr(testonly, 1, ${all})" \
    2>/dev/null | sort) || {
    echo "bazel query for the visible targets failed" >&2
    return 1
  }
  listed=$(sed -n '/<!-- public-targets: begin -->/,/<!-- public-targets: end -->/p' \
    ../../README.md | grep -o '^@nbio//[^ ]*' | sort)
  if [[ -z "$listed" || "$visible" != "$listed" ]]; then
    echo "README.md's public targets and Bazel's visible targets differ" \
      "(< visible only, > README only):" >&2
    diff <(echo "$visible") <(echo "$listed") >&2
    return 1
  fi
}
check readme_lists_exactly_the_public_targets readme_lists_public_targets

# Free the second Bazel server's memory; CI runs more passes after this.
"$bazel" shutdown >/dev/null 2>&1 || true
exit "$status"
