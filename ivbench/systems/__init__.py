"""Systems under test: the API in `base`, built-ins in their own modules or folders."""
from .base import Session, System

__all__ = ["Session", "System"]
