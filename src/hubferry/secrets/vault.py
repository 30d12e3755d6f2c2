"""The per-user secret vault: one Fernet-encrypted JSON file that several processes can share.

Layout under ``HUBFERRY_HOME``::

    secrets.json        0600, {"version": 1, "check": <token>, "owners": {owner: {name: entry}}}
    secrets.json.lock   0600, fcntl.flock'ed by every writer (readers rely on atomic os.replace)
    keys/               0700
    keys/vault.key      0600, the Fernet key, unless HUBFERRY_VAULT_KEY provides one

``check`` is a known plaintext encrypted with the primary key; it lets a wrong key be reported
as a :class:`ConfigError` before anything is written, even for an owner with no entries yet.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from hubferry.config import Settings
from hubferry.errors import ConfigError, ValidationError
from hubferry.logs import get_logger, register_secret

#: Well-known secret names; other adapters (Replicate, RunPod) add theirs here.
HF_TOKEN = "hf_token"
HF_USERNAME = "hf_username"
WELL_KNOWN_NAMES: tuple[str, ...] = (HF_TOKEN, HF_USERNAME)

KEY_ENV = "HUBFERRY_VAULT_KEY"
OLD_KEYS_ENV = "HUBFERRY_VAULT_OLD_KEYS"
VAULT_FILE = "secrets.json"
KEY_FILE = Path("keys") / "vault.key"

#: Largest secret value accepted; tokens and API keys are far smaller.
MAX_VALUE_BYTES = 16 * 1024
MAX_OWNER_CHARS = 128

_NAME = re.compile(r"[a-z0-9_-]{1,64}")
#: Control, format, surrogate and line/paragraph separator characters: invisible or line-breaking.
_FORBIDDEN_OWNER_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_CHECK_PLAINTEXT = b"hubferry-vault-check-v1"
_FORMAT_VERSION = 1

log = get_logger(__name__)


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown about a stored secret: its name and when it last changed, never its value."""

    name: str
    updated_at: str


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid secret name (``[a-z0-9_-]{1,64}``).

    Raises:
        ValidationError: naming the field ``name``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name)[:80] if isinstance(name, str) else type(name).__name__
        raise ValidationError(
            f"Invalid secret name {shown}: use 1-64 characters from a-z, 0-9, '_' and '-'",
            field="name",
            hint=f"For example {HF_TOKEN!r} or {HF_USERNAME!r}.",
        )
    return name


def validate_owner(owner: object) -> str:
    """Return ``owner`` if it is non-empty, at most 128 characters and free of control characters.

    Raises:
        ValidationError: naming the field ``owner``.
    """
    if not isinstance(owner, str):
        raise ValidationError(f"Invalid owner: expected a string, got {type(owner).__name__}", field="owner")
    if not owner:
        raise ValidationError("Invalid owner: must not be empty", field="owner")
    if len(owner) > MAX_OWNER_CHARS:
        raise ValidationError(f"Invalid owner: longer than {MAX_OWNER_CHARS} characters", field="owner")
    if any(unicodedata.category(c) in _FORBIDDEN_OWNER_CATEGORIES for c in owner):
        raise ValidationError(f"Invalid owner {owner[:40]!r}: contains control characters", field="owner")
    if owner != owner.strip():
        raise ValidationError(f"Invalid owner {owner[:40]!r}: starts or ends with whitespace", field="owner")
    return owner


def _validate_value(value: object) -> bytes:
    # Messages here describe the value's shape only: the value itself must never reach an error.
    if not isinstance(value, str):
        raise ValidationError(f"Invalid secret value: expected a string, got {type(value).__name__}", field="value")
    if not value:
        raise ValidationError("Invalid secret value: must not be empty", field="value")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Invalid secret value: not encodable as UTF-8", field="value") from None
    if len(data) > MAX_VALUE_BYTES:
        raise ValidationError(f"Invalid secret value: longer than {MAX_VALUE_BYTES} bytes", field="value")
    return data


def generate_key() -> str:
    """A new random Fernet key, as accepted by ``HUBFERRY_VAULT_KEY``."""
    return Fernet.generate_key().decode("ascii")


def _fernet(key: str, source: str) -> Fernet:
    try:
        raw = base64.urlsafe_b64decode(key.strip().encode("ascii"))
        if len(raw) != 32:
            raise ValueError
        return Fernet(key.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError, binascii.Error):
        # Never echo the key: say where it came from and what it should look like.
        raise ConfigError(
            f"Invalid vault key from {source}: expected 32 url-safe base64-encoded bytes",
            setting=source,
            hint="Generate one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'",
        ) from None


class Vault:
    """Encrypted secrets per owner, stored in ``home/secrets.json``.

    Args:
        home: the ``HUBFERRY_HOME`` directory.
        key: the primary Fernet key (setting HUBFERRY_VAULT_KEY); default ``home/keys/vault.key``
            (created on the first write).
        old_keys: keys that may still decrypt entries, tried after ``key`` (HUBFERRY_VAULT_OLD_KEYS).
    """

    def __init__(self, home: Path, key: str | None = None, *, old_keys: Sequence[str] = ()) -> None:
        self.home = Path(home).expanduser()
        self.path = self.home / VAULT_FILE
        self.key_path = self.home / KEY_FILE
        self._lock_path = self.home / (VAULT_FILE + ".lock")
        self._key: str | None = key if key is not None and key.strip() else None
        self._key_source = KEY_ENV if self._key is not None else str(self.key_path)
        self._old_keys = [k for k in old_keys if k.strip()]
        self._crypto: MultiFernet | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        """The vault under ``settings.home`` with the configured keys (HUBFERRY_VAULT_KEY, _OLD_KEYS)."""
        key = settings.vault_key.get_secret_value() if settings.vault_key else None
        old = settings.vault_old_keys.get_secret_value().split(",") if settings.vault_old_keys else []
        return cls(settings.home, key, old_keys=old)

    def __repr__(self) -> str:
        return f"Vault(path={str(self.path)!r})"

    # -- public API ------------------------------------------------------------------------------

    def set(self, owner: str, name: str, value: str) -> None:
        """Store ``value`` as ``owner``'s secret ``name``, replacing any previous value.

        Raises:
            ValidationError: bad owner, name or value (the value is never quoted).
            ConfigError: the vault exists but the configured key cannot read it.
        """
        owner, name, plaintext = validate_owner(owner), validate_name(name), _validate_value(value)
        register_secret(value)
        with self._locked():
            data = self._read()
            crypto = self._crypto_for_write(data)
            data.setdefault("owners", {}).setdefault(owner, {})[name] = {
                "ciphertext": crypto.encrypt(plaintext).decode("ascii"),
                "updated_at": _now(),
            }
            self._write(data)
        log.debug("secret stored", owner=owner, name=name)

    def get(self, owner: str, name: str) -> str | None:
        """``owner``'s secret ``name``, or ``None`` if it is not stored.

        Raises:
            ValidationError: bad owner or name.
            ConfigError: the vault exists but the configured key cannot read it.
        """
        owner, name = validate_owner(owner), validate_name(name)
        data = self._read()
        if not data:
            return None
        crypto = self._crypto_for_read(data)
        entry = data.get("owners", {}).get(owner, {}).get(name)
        if entry is None:
            return None
        value = self._decrypt(crypto, entry.get("ciphertext"), f"{owner}/{name}").decode("utf-8")
        register_secret(value)
        return value

    def delete(self, owner: str, name: str) -> bool:
        """Remove ``owner``'s secret ``name``; ``True`` if it existed."""
        owner, name = validate_owner(owner), validate_name(name)
        with self._locked():
            data = self._read()
            secrets = data.get("owners", {}).get(owner, {})
            if name not in secrets:
                return False
            del secrets[name]
            if not secrets:
                del data["owners"][owner]
            self._write(data)
        log.debug("secret deleted", owner=owner, name=name)
        return True

    def names(self, owner: str) -> list[str]:
        """The sorted names of ``owner``'s secrets (no key needed, no values read)."""
        return [info.name for info in self.entries(owner)]

    def entries(self, owner: str) -> list[SecretInfo]:
        """Name and ``updated_at`` of each of ``owner``'s secrets, sorted by name."""
        owner = validate_owner(owner)
        secrets = self._read().get("owners", {}).get(owner, {})
        return [SecretInfo(name, str(entry.get("updated_at", ""))) for name, entry in sorted(secrets.items())]

    def rotate(self) -> int:
        """Re-encrypt every secret with the primary key, so old keys can be retired.

        Returns:
            How many secrets were re-encrypted.

        Raises:
            ConfigError: some secret cannot be decrypted by any configured key (nothing is written).
        """
        with self._locked():
            data = self._read()
            if not data:
                return 0
            crypto = self._crypto_for_read(data)
            count = 0
            for owner, secrets in data.get("owners", {}).items():
                for name, entry in secrets.items():
                    where = f"{owner}/{name}"
                    self._decrypt(crypto, entry.get("ciphertext"), where)  # a clear error before rotating
                    entry["ciphertext"] = crypto.rotate(entry["ciphertext"].encode("ascii")).decode("ascii")
                    count += 1
            data["check"] = crypto.encrypt(_CHECK_PLAINTEXT).decode("ascii")
            self._write(data)
        log.info("vault rotated", secrets=count)
        return count

    # -- keys ------------------------------------------------------------------------------------

    def _crypto_for_read(self, data: dict[str, Any]) -> MultiFernet:
        """The keys, checked against the vault's known plaintext."""
        crypto = self._load_crypto(create=False)
        check = data.get("check")
        if check is not None:
            self._decrypt(crypto, check, "key check")
        return crypto

    def _crypto_for_write(self, data: dict[str, Any]) -> MultiFernet:
        if not data:
            crypto = self._load_crypto(create=True)
            data.update({"version": _FORMAT_VERSION, "check": crypto.encrypt(_CHECK_PLAINTEXT).decode("ascii")})
            return crypto
        return self._crypto_for_read(data)

    def _load_crypto(self, *, create: bool) -> MultiFernet:
        if self._crypto is None:
            key = self._key if self._key is not None else self._read_key_file(create=create)
            primary = _fernet(key, self._key_source)
            old = [_fernet(k, OLD_KEYS_ENV) for k in self._old_keys]
            self._crypto = MultiFernet([primary, *old])
        return self._crypto

    def _read_key_file(self, *, create: bool) -> str:
        try:
            return self.key_path.read_text("ascii").strip()
        except FileNotFoundError:
            if not create:
                raise ConfigError(
                    f"The vault {self.path} exists but its key file {self.key_path} is missing",
                    setting=KEY_ENV,
                    path=str(self.key_path),
                    hint=f"Restore {self.key_path} or set {KEY_ENV} to the key that wrote the vault.",
                ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"Cannot read the vault key file {self.key_path}: {type(exc).__name__}",
                setting=KEY_ENV,
                path=str(self.key_path),
            ) from None
        return self._create_key_file()

    def _create_key_file(self) -> str:
        keys_dir = self.key_path.parent
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(keys_dir, 0o700)
        fd, tmp = tempfile.mkstemp(dir=keys_dir, prefix=".vault.key.", suffix=".tmp")  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(generate_key() + "\n")
                f.flush()
                os.fsync(f.fileno())
            # link() never replaces: when two processes race, the first key wins and both use it.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.key_path)
                log.info("vault key created", path=str(self.key_path))
        finally:
            os.unlink(tmp)
        _fsync_dir(keys_dir)
        return self.key_path.read_text("ascii").strip()

    def _decrypt(self, crypto: MultiFernet, token: object, where: str) -> bytes:
        if not isinstance(token, str):
            raise ConfigError(f"The vault {self.path} is corrupt: entry {where} has no ciphertext", path=str(self.path))
        try:
            return crypto.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise ConfigError(
                f"Cannot decrypt the vault {self.path} ({where}) with the key from {self._key_source}",
                setting=KEY_ENV,
                path=str(self.path),
                hint=f"Set {KEY_ENV} (or restore {self.key_path}) to the key that wrote the vault; "
                f"after a key change, list the previous key in {OLD_KEYS_ENV}.",
            ) from None

    # -- file ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers across processes (and threads) with an exclusive flock."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("owners", {}), dict):
            raise ConfigError(
                f"The vault {self.path} is not valid JSON of the expected shape",
                path=str(self.path),
                hint="Restore it from a backup; it was not modified.",
            )
        return data

    def _write(self, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.home, prefix=".secrets.", suffix=".tmp")  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.home)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
