"""The two roles of people who sign in. Imports nothing: the CLI's parser reads ``ROLES`` (``studio users add
--role``) without loading the store that ``studio.auth`` needs."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    EDITOR = "editor"  # everything
    RATER = "rater"    # the rating page and nothing else


ROLES = tuple(Role)
