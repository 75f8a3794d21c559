from flask_smorest import Blueprint

blp = Blueprint("agents", __name__, url_prefix="/api/v1/agents")
