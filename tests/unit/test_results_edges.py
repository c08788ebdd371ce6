"""results edges, pinned one by one (issue 18: each test kills a mutmut survivor)."""

from __future__ import annotations
