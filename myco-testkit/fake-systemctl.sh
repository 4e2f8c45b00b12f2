#!/bin/sh
# A stand-in systemctl for tests: records each command line in `calls` beside it and reports
# every unit `show` asks about as running.
echo "$*" >> "$(dirname "$0")/calls"
if [ "$1" = show ]; then
    shift 2
    for unit in "$@"; do
        printf 'Id=%s\nActiveState=active\nSubState=running\nNRestarts=0\n\n' "$unit"
    done
fi
