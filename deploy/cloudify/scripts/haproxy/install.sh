#!/bin/bash
# `create` of the haproxy node (lb-haproxy.yaml): installs HAProxy from the distribution and
# enables it; configure.py writes its configuration next.
set -euo pipefail
if ! command -v haproxy >/dev/null; then
  sudo apt-get update -q
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy
fi
sudo systemctl enable haproxy
ctx logger info "haproxy $(haproxy -v | head -n1)"
