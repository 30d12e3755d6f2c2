"""Who owns what a command does in the embedded single-user mode: the OS account running it."""

from __future__ import annotations

import os
import pwd

from hubferry.errors import ValidationError


def default_owner() -> str:
    """The OS account running the process (from the uid, never from LOGNAME/USER, which anyone can set)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        raise ValidationError(f"the uid {os.getuid()} has no account name", field="owner",
                              hint="run hubferry as a user with an entry in /etc/passwd") from None
