#!/usr/bin/env bash
# Regenerates ca136.pb.go from ca136.proto. Needs protoc (Debian: protobuf-compiler) and
# protoc-gen-go (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11) on PATH.
set -euo pipefail
cd "$(dirname "$0")"
protoc -I. -I/usr/include --go_out=. --go_opt=paths=source_relative ca136.proto
