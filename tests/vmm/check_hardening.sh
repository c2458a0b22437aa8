#!/bin/sh
# check_hardening.sh BINARY: fails unless BINARY carries the hardening a
# distribution gives its release packages, read from the ELF itself (so a
# flag lost from the build, or overridden by a preset, shows here):
#   PIE                 ELF type DYN, so ASLR moves the code too
#   full RELRO          a GNU_RELRO segment and BIND_NOW: the GOT is read-only
#   stack protector     calls to __stack_chk_fail
#   _FORTIFY_SOURCE=2   fortified libc calls (__*_chk)
#   _GLIBCXX_ASSERTIONS bounds-checked standard containers (__glibcxx_assert_fail)
set -eu
bin=${1:?usage: check_hardening.sh BINARY}
headers=$(readelf -W -h -l -d "$bin")
symbols=$(readelf -W --dyn-syms "$bin")
failed=0
missing() {
  echo "check_hardening: $bin: $1" >&2
  failed=1
}
echo "$headers" | grep -Eq 'Type:[[:space:]]+DYN' || missing "not a position-independent executable (link with -pie)"
echo "$headers" | grep -q 'GNU_RELRO' || missing "no RELRO segment (link with -z relro)"
echo "$headers" | grep -Eq '\(BIND_NOW\)|\(FLAGS\).*BIND_NOW|\(FLAGS_1\).*[[:space:]]NOW' ||
  missing "lazy binding leaves the GOT writable: partial RELRO only (link with -z now)"
echo "$symbols" | grep -q '__stack_chk_fail' || missing "no stack protector (compile with -fstack-protector-strong)"
echo "$symbols" | grep -v '__stack_chk_fail' | grep -Eq '__[a-z0-9_]+_chk(@|[[:space:]]|$)' ||
  missing "no fortified libc calls (compile with -D_FORTIFY_SOURCE=2 and optimisation)"
echo "$symbols" | grep -q '__glibcxx_assert_fail' ||
  missing "standard containers unchecked (compile with -D_GLIBCXX_ASSERTIONS)"
[ "$failed" -eq 0 ] && echo "check_hardening: $bin: PIE, full RELRO, stack protector, fortified, checked containers"
exit "$failed"
