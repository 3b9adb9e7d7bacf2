from flask import Blueprint

from saas.auth.models import Role
from saas.web import access

bp = Blueprint("customers", __name__)


@bp.route("/customers")
@access(Role.staff)
def index():
    return "customers"
