# Turns `go test -bench` output into one table: package, benchmark, and
# every figure it reported (ns/op, B/op, custom metrics such as p99-ms).
/^pkg: / { pkg = $2; sub(/^github.com\/galaxy\/rtmanager\//, "", pkg) }
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
	figures = ""
	for (i = 3; i < NF; i += 2) figures = figures sprintf("%s %s  ", $i, $(i + 1))
	rows[++n] = sprintf("%-22s %-44s %s", pkg, name, figures)
}
/^(FAIL|panic|--- FAIL)/ { failed = 1; print }
END {
	printf "%-22s %-44s %s\n", "package", "benchmark", "figures"
	for (i = 1; i <= n; i++) print rows[i]
	if (failed) exit 1
}
