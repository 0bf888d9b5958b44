"""Blueprint 'webhooks' (filled in by its issue)."""
from flask import Blueprint

bp = Blueprint("webhooks", __name__)
