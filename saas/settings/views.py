from flask import Blueprint

from saas.auth.models import Role
from saas.web import access

bp = Blueprint("settings", __name__)


@bp.route("/settings")
@access(Role.owner)
def index():
    return "settings"
