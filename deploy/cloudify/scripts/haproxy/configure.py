# `configure` and `update` of the haproxy node (lb-haproxy.yaml), on the LB VM (host agent):
# renders haproxy.cfg from the node's properties (the service controller's inputs), checks it
# with `haproxy -c`, installs it and reloads HAProxy (a reload keeps established connections).
# A configuration HAProxy refuses fails the operation and leaves the running one in place.
#
# One frontend per Service port (TCP mode), one backend each with every Node at
# <address>:<node_port>. Health checks: {type: http, port, path} -> `option httpchk` on that port
# (kube-proxy's healthCheckNodePort with externalTrafficPolicy Local), else a TCP connect to the
# node port. source_ranges -> an ACL on every frontend. session_affinity ClientIP -> balance
# source. The digest of what was applied is stored as the runtime property `applied`, which
# drift.py compares.
import hashlib
import json
import os
import re
import subprocess
import tempfile

CONTRACT = ["service", "ports", "backends", "health_check", "source_ranges", "session_affinity"]
CONFIG = "/etc/haproxy/haproxy.cfg"


def digest(props):
    config = {k: props.get(k) for k in CONTRACT}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def ident(text):
    """A name HAProxy accepts for a section: letters, digits, '-', '_', '.', ':'."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", str(text)) or "_"


def render(props):
    service = props.get("service") or {}
    health = props.get("health_check") or {}
    ranges = [r for r in props.get("source_ranges") or [] if r]
    balance = "source" if props.get("session_affinity") == "ClientIP" else "roundrobin"
    lines = [
        "# Written by the service controller's LB blueprint for Service %s/%s (uid %s)."
        % (service.get("namespace"), service.get("name"), service.get("uid")),
        "global",
        "    log /dev/log local0",
        "    maxconn 20000",
        "    daemon",
        "",
        "defaults",
        "    log global",
        "    mode tcp",
        "    option tcplog",
        "    timeout connect 5s",
        "    timeout client 1h",
        "    timeout server 1h",
        "",
    ]
    for p in props.get("ports") or []:
        if p.get("protocol", "TCP") != "TCP" or not p.get("node_port"):
            continue  # the controller sends only TCP ports with a node port; be safe anyway
        name = ident("%s-%s" % (p.get("name") or "port", p["port"]))
        lines += ["frontend fe-%s" % name, "    bind :%d" % int(p["port"])]
        if ranges:
            lines += [
                "    acl allowed src %s" % " ".join(ranges),
                "    tcp-request connection reject if !allowed",
            ]
        lines += ["    default_backend be-%s" % name, ""]
        lines += ["backend be-%s" % name, "    balance %s" % balance]
        check = "check"
        if health.get("type") == "http" and health.get("port"):
            lines += [
                "    option httpchk GET %s" % (health.get("path") or "/healthz"),
                "    http-check expect status 200",
            ]
            check = "check port %d" % int(health["port"])
        for b in props.get("backends") or []:
            lines.append("    server %s %s:%d %s inter 5s fall 2 rise 2"
                         % (ident(b["node"]), b["address"], int(p["node_port"]), check))
        lines.append("")
    return "\n".join(lines) + "\n"


def main():
    from cloudify import ctx
    from cloudify.exceptions import NonRecoverableError

    props = ctx.node.properties
    text = render(props)
    fd, candidate = tempfile.mkstemp(prefix="haproxy-", suffix=".cfg")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    check = subprocess.run(["haproxy", "-c", "-f", candidate], capture_output=True, text=True)
    if check.returncode != 0:
        raise NonRecoverableError("haproxy refused the new configuration (the old one keeps "
                                  "running): %s" % (check.stderr or check.stdout).strip())
    subprocess.run(["sudo", "install", "-m", "0644", candidate, CONFIG], check=True)
    os.remove(candidate)
    subprocess.run(["sudo", "systemctl", "reload-or-restart", "haproxy"], check=True)
    rp = ctx.instance.runtime_properties
    rp["applied"] = digest(props)
    rp["frontends"] = len([p for p in props.get("ports") or [] if p.get("node_port")])
    rp["servers"] = len(props.get("backends") or [])
    ctx.logger.info("haproxy configured: %d frontend(s), %d server(s) each",
                    rp["frontends"], rp["servers"])


if __name__ == "__main__":
    main()
