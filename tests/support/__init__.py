"""What the tests share besides fixtures: helpers a test module imports from here, never
from another test module (fixtures are conftest.py's, found by name)."""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
