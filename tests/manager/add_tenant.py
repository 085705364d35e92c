"""Creates a tenant on the LOCAL stack the way configure_manager creates default_tenant.

The open-source manager answers POST /tenants with 404 "This feature exists only in the premium
edition" (manager_rest.premium_enabled is false without cloudify_premium), so the tier's second
tenant is made here with the REST service's own models: the tenant row, its RabbitMQ vhost and
user (AMQPManager, as for default_tenant) and the admin user's membership. Runs in the manager's
venv with MANAGER_REST_CONFIG_PATH / MANAGER_REST_SECURITY_CONFIG_PATH set. Idempotent, and
serialized by a lock next to the REST config: the smoke driver and the fixtures start side by side
on an empty state and both create the second tenant (the second insert would fail on the tenant's
unique name).
"""
import fcntl
import os
import sys

from manager_rest import config, constants
from manager_rest.amqp_manager import AMQPManager
from manager_rest.flask_utils import setup_flask_app
from manager_rest.storage import db, models


def main(name):
    config.instance.load_configuration(from_db=False)
    with setup_flask_app().app_context():
        config.instance.load_from_db(session=db.session)
        if models.Tenant.query.filter_by(name=name).first():
            print(f"tenant {name} exists")
            return 0
        tenant = models.Tenant(name=name)
        db.session.add(tenant)
        AMQPManager(host=config.instance.amqp_management_host, username=config.instance.amqp_username,
                    password=config.instance.amqp_password,
                    cadata=config.instance.amqp_ca).create_tenant_vhost_and_user(tenant=tenant)
        admin = models.User.query.get(constants.BOOTSTRAP_ADMIN_ID)
        role = models.Role.query.filter_by(name=constants.DEFAULT_TENANT_ROLE).one()
        db.session.add(models.UserTenantAssoc(user=admin, tenant=tenant, role=role))
        db.session.commit()
        print(f"tenant {name} created")
    return 0


if __name__ == "__main__":
    lock_path = os.path.join(os.path.dirname(os.environ["MANAGER_REST_CONFIG_PATH"]), "add_tenant.lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sys.exit(main(sys.argv[1]))
