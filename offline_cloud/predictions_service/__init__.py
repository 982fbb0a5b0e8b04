"""A local Replicate-compatible predictions server running a real background-removal model."""

from .config import Settings
from .service import Service, build_service

__all__ = ["Service", "Settings", "build_service"]
