#!/bin/sh
# A stand-in systemctl for tests and benchmarks: records each command line in `calls` beside it,
# reports every unit `show` asks about as running (options, which start with '-', are skipped),
# and accepts everything else.
echo "$*" >> "$(dirname "$0")/calls"
if [ "$1" = show ]; then
    shift
    for arg in "$@"; do
        case "$arg" in
        -*) ;;
        *) printf 'Id=%s\nActiveState=active\nSubState=running\nNRestarts=0\n\n' "$arg" ;;
        esac
    done
fi
exit 0
