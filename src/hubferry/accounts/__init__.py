"""Accounts of ``hubferry serve``: users with argon2-hashed passwords, API tokens, dashboard sessions."""

from hubferry.accounts.users import Accounts, NewSession, NewToken, validate_username
from hubferry.store.accounts import ApiToken, User

__all__ = ["Accounts", "ApiToken", "NewSession", "NewToken", "User", "validate_username"]
