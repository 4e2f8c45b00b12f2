#!/bin/sh
# A stand-in systemctl for tests and benchmarks: records each command line in `calls` beside it,
# reports every unit `show` asks about as running (options, which start with '-', are skipped),
# except a unit whose file in `units` beside it runs /bin/false, which it reports failed, and
# accepts everything else.
here=$(dirname "$0")
echo "$*" >> "$here/calls"
if [ "$1" = show ]; then
    shift
    for arg in "$@"; do
        case "$arg" in
        -*) ;;
        *)
            if grep -qs 'ExecStart="/bin/false"' "$here/units/$arg"; then
                printf 'Id=%s\nActiveState=failed\nSubState=failed\nNRestarts=0\n\n' "$arg"
            else
                printf 'Id=%s\nActiveState=active\nSubState=running\nNRestarts=0\n\n' "$arg"
            fi
            ;;
        esac
    done
fi
exit 0
