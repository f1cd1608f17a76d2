// RUN: moe-opt %s --verify-diagnostics --pass-pipeline='builtin.module(func.func(moe-plan-kv-cache))'

// Without moe.model or max-seq the longest sequence is unknown.
// expected-error @below {{moe-plan-kv-cache: the longest sequence is unknown; pass max-seq=N or plan a model imported by moe-translate}}
func.func @forward(%q: tensor<?x64xf32>, %kv: tensor<?x32xf32>, %c: !moe.kv_cache<2x?x16xf32>) {
  %o, %n = moe.attention %q, %kv, %kv, %c heads 4
      : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, !moe.kv_cache<2x?x16xf32>
  return
}
