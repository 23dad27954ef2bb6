"""cc_fuzz_test: one fuzz target, two ways to run it.

    cc_fuzz_test(
        name = "message_queue_fuzz",
        srcs = ["message_queue_fuzz.cc"],   # defines LLVMFuzzerTestOneInput
        corpus = glob(["testdata/message_queue_fuzz/*"]),
        deps = [":message_queue"],
    )

makes

  :message_queue_fuzz       a cc_test, part of `bazel test //...` with any
                            compiler: replays every corpus file, then a fixed
                            number of seeded random inputs (deterministic).
  :message_queue_fuzzer     the libFuzzer binary (tag "manual"): under
                            --config=fuzz it links libFuzzer, e.g.
      tools/bazel run --config=fuzz //queue:message_queue_fuzzer -- \\
          -max_total_time=30 -timeout=10 $(mktemp -d) \\
          $PWD/queue/testdata/message_queue_fuzz
                            libFuzzer writes new inputs to the first corpus
                            folder only: a scratch one here, so the repo's
                            corpus is only read. tools/run_fuzzers.sh [secs]
                            runs every fuzzer that way and reports each.
"""

load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_test")

def cc_fuzz_test(name, srcs, deps = [], corpus = [], random_runs = 20000, max_len = 4096, **kwargs):
    fuzz_deps = select({
        "@nbio//tools/build_rules:libfuzzer": [],
        "//conditions:default": ["@nbio//tools/build_rules:fuzz_replay_main"],
    })
    cc_test(
        name = name,
        srcs = srcs,
        deps = deps + ["@nbio//tools/build_rules:fuzz_replay_main"],
        data = corpus,
        args = ["$(location %s)" % f for f in corpus],
        env = {
            "NBIO_FUZZ_RANDOM_RUNS": str(random_runs),
            "NBIO_FUZZ_MAX_LEN": str(max_len),
        },
        **kwargs
    )
    cc_binary(
        name = name + "er",
        srcs = srcs,
        deps = deps + fuzz_deps,
        copts = select({
            "@nbio//tools/build_rules:libfuzzer": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        linkopts = select({
            "@nbio//tools/build_rules:libfuzzer": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        tags = ["manual", "fuzzer"],
    )
