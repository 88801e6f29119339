#!/bin/sh
# Run the unit test binaries given as arguments; print one line each and a total.
# Exit status 77 from a test means skipped: the test prints why. VALGRIND=1 runs each under
# memcheck with leaks as errors.
pass=0 fail=0 skip=0
for t in "$@"; do
	name=$(basename "$t")
	if [ -n "${VALGRIND:-}" ]; then
		CK_FORK=no valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect "$t"
	else
		"$t"
	fi
	rc=$?
	case $rc in
	0) pass=$((pass + 1)); echo "PASS: $name" ;;
	77) skip=$((skip + 1)); echo "SKIP: $name" ;;
	*) fail=$((fail + 1)); echo "FAIL: $name (exit $rc)" ;;
	esac
done
echo "unit: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
