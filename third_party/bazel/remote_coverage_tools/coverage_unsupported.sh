#!/bin/sh
# Stands in for Bazel's Java coverage tools, which this offline build does not have.
echo "bazel coverage is not supported by this project's offline Bazel setup;" \
     "'make test' runs the same tests with pytest." >&2
exit 1
