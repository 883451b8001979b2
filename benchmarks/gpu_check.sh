#!/bin/bash
# The GPU check lives in the performance suite; this name is kept for the guides that give it.
exec bash "$(dirname "$0")/perf/gpu_check.sh" "$@"
