"""Names a system spec may point at that are not systems (tests/test_plugins.py)."""
from __future__ import annotations

NOT_A_SYSTEM = 42


class NotASystem:
    pass
