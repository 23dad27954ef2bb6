# Awk functions shared by the benchmark scripts' table programs:
#   awk -f tools/bench/bench_lib.awk -f /dev/stdin DATA <<'AWK' ... AWK
# POSIX awk (Debian's default is mawk).

# The median of the numbers in a space-separated list (mean of the middle
# two when even; "" for an empty list).
function median(list,   a, n, i, j, t) {
  n = split(list, a, " ")
  if (n == 0) return ""
  for (i = 2; i <= n; i++) {
    t = a[i] + 0
    for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
    a[j + 1] = t
  }
  return (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}

# Microseconds for people: "850 us", "2.31 ms", "1.20 s".
function us(v) {
  if (v == "") return "-"
  if (v < 1000) return sprintf("%.0f us", v)
  if (v < 1000000) return sprintf("%.2f ms", v / 1000)
  return sprintf("%.2f s", v / 1000000)
}

# 1234567 -> "1,234,567".
function grouped(v,   s, r) {
  if (v == "") return "-"
  s = sprintf("%.0f", v); r = ""
  while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
  return s r
}

# Reads a flat JSON object (one "key": value per line, as echo_load --json
# prints, or all on one line, as cpu_echo_server prints) into out[key].
# Values must not contain commas or braces. Returns the number of keys.
function read_flat_json(file, out,   line, text, n, parts, i, kv, key, value, count) {
  text = ""
  while ((getline line < file) > 0) text = text " " line
  close(file)
  gsub(/[{}]/, "", text)
  n = split(text, parts, ",")
  count = 0
  for (i = 1; i <= n; i++) {
    kv = parts[i]
    if (kv !~ /"[^"]*" *:/) continue
    key = kv; sub(/^[^"]*"/, "", key); sub(/".*/, "", key)
    value = kv; sub(/^[^:]*: */, "", value); sub(/ *$/, "", value); gsub(/"/, "", value)
    out[key] = value
    count++
  }
  return count
}
