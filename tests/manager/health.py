"""Health probe of a manager: REST answers with auth, and a trivial workflow really runs.

Uploads blueprints/health.yaml once (blueprint `tier-health`), creates a fresh deployment, runs
`install` to `terminated` and deletes the deployment again. Bounded by --timeout; exits non-zero
with one line saying what did not happen.
"""
import argparse
import sys
import time

from tierlib import TierError, create_deployment, delete_deployment, ensure_blueprint, env_client, run_workflow


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--timeout", type=float, default=120)
    args = p.parse_args()
    deadline = time.time() + args.timeout
    client = env_client()
    last = None
    while True:  # REST first: gunicorn workers may still be importing
        try:
            client.deployments.list(_size=1)
            break
        except Exception as err:  # noqa: BLE001 - any failure means "not yet"
            last = err
        if time.time() > deadline:
            print(f"health: REST never answered with auth: {last}")
            return 1
        time.sleep(0.5)
    dep = f"tier-health-{int(time.time())}"
    try:
        t0 = time.time()
        ensure_blueprint(client, "tier-health", "health.yaml", timeout=max(5, deadline - time.time()))
        t1 = time.time()
        create_deployment(client, "tier-health", dep, timeout=max(5, deadline - time.time()))
        t2 = time.time()
        run_workflow(client, dep, "install", timeout=max(5, deadline - time.time()))
        t3 = time.time()
        delete_deployment(client, dep, timeout=max(5, deadline - time.time()))
        print(f"health: ok (blueprint {t1 - t0:.1f} s, deployment {t2 - t1:.1f} s, install {t3 - t2:.1f} s, "
              f"delete {time.time() - t3:.1f} s)")
        return 0
    except TierError as err:
        print(f"health: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
