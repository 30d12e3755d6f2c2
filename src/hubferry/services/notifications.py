"""Signed webhooks to users about their jobs: every state change, to the URL of the job (``notify_url``)
and to the owner's own URL, as Standard Webhooks, retried with backoff, with a delivery log.

The target URL is the user's and may point anywhere, so it is treated as hostile: https (plain http
only to a loopback address the setting allows), bounded length, no credentials in it, its host resolved
and every address checked by :mod:`hubferry.dataset.addresses` (no loopback, private, link-local or
metadata address unless ``fetch_allow_hosts`` allows it), the
checked address connected to (no second resolution), no redirects followed, short timeouts, a bounded
number of attempts. Nothing here runs in a request: a :class:`Sender` thread of ``hubferry serve``
queues changes it finds in the job store (``jobs.updated_at``, then each job's timeline after the
newest change already queued) and sends what is due. The one exception is :func:`send_test`, the
settings page's "send a test event", which waits for its single attempt (short timeouts) to show the answer.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx2
from standardwebhooks import Webhook

from hubferry.config import Settings
from hubferry.dataset.addresses import AllowList, Resolver, choose_address, system_resolve
from hubferry.dataset.fetch import display_url
from hubferry.errors import HubferryError, ValidationError
from hubferry.logs import get_logger, printable
from hubferry.secrets.vault import Vault
from hubferry.services.views import job_dict
from hubferry.store import JobStore, job_queries
from hubferry.store.database import utcnow
from hubferry.store.outbox import Delivery, Outbox, StateChange, Target

log = get_logger(__name__)

#: The vault entry (per owner) holding the signing secret of the owner's deliveries.
SECRET_NAME = "webhook_signing"
#: Waits before each retry of a failed delivery; after the last one the delivery is given up.
RETRY_DELAYS_S = (10.0, 60.0, 300.0, 1800.0, 7200.0)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1
#: Time allowed to connect to a target, and to wait for each read of its answer.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0
#: An attempt claimed but not recorded within this is made again (its sender died while sending).
CLAIM_HOLD = timedelta(minutes=2)
#: How often the sender looks for new state changes and due deliveries.
SCAN_INTERVAL_S = 1.0
#: Each scan re-reads this much before the previous one: a change commits a little after its timestamp.
SCAN_OVERLAP = timedelta(seconds=30)
#: On start, state changes this recent that were never queued are still sent (a restart loses nothing recent).
STARTUP_LOOKBACK = timedelta(hours=1)
#: Deliveries sent at once.
SEND_THREADS = 4
#: The first characters of an error kept in the delivery log.
MAX_ERROR_CHARS = 300
_USER_AGENT = "hubferry-webhooks/1"
#: The longest target URL accepted.
MAX_URL_CHARS = 2048
#: The ``type`` of the event "send a test event" sends.
TEST_EVENT = "webhook.test"


_secret_lock = threading.Lock()


def signing_secret(vault: Vault, owner: str) -> str:
    """The owner's Standard Webhooks signing secret (``whsec_...``), created on first use.

    Routes that set a target call this first, so the sender only ever reads it.
    """
    with _secret_lock:  # get-or-create: two threads must not make two secrets
        secret = vault.get(owner, SECRET_NAME)
        if secret is None:
            secret = _new_secret()
            vault.set(owner, SECRET_NAME, secret)
    return secret


def _new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def has_signing_secret(vault: Vault, owner: str) -> bool:
    """Whether ``owner`` has a signing secret already (the settings page shows a new one once, then never)."""
    return any(entry.name == SECRET_NAME for entry in vault.entries(owner))


def new_signing_secret(vault: Vault, owner: str) -> str:
    """Replace ``owner``'s signing secret; every delivery from now on (retries included) is signed with it."""
    with _secret_lock:
        secret = _new_secret()
        vault.set(owner, SECRET_NAME, secret)
    log.info("webhook signing secret replaced", owner=owner)
    return secret


def check_url(settings: Settings, url: str, *, field: str, resolve: Resolver = system_resolve) -> str:
    """``url`` if deliveries may be sent to it now: http(s), no credentials, every address it resolves to allowed.

    Raises:
        ValidationError: naming ``field`` and why the URL is refused.
    """
    if len(url) > MAX_URL_CHARS:
        raise ValidationError(f"the URL is {len(url)} characters long; at most {MAX_URL_CHARS} are accepted",
                              field=field, hint="use a shorter URL")
    try:
        _pinned(httpx2.URL(url), AllowList.parse(settings.fetch_allow_hosts), resolve)
    except ValidationError as exc:
        raise ValidationError(exc.message, field=field, hint=exc.hint) from None
    except (httpx2.InvalidURL, TypeError, ValueError) as exc:
        raise ValidationError(f"not a valid URL: {exc}", field=field) from None
    return url


def _pinned(url: httpx2.URL, allow: AllowList, resolve: Resolver) -> str:
    """The checked address to connect to for ``url``."""
    if url.scheme not in ("http", "https") or not url.host:
        raise ValidationError("webhook URLs must be http or https", hint="use https://...")
    if url.userinfo:
        raise ValidationError("webhook URLs may not carry a user name or password",
                              hint="put a secret in the path instead, or verify the signature")
    port = url.port or (443 if url.scheme == "https" else 80)
    address = choose_address(url.host, port, allow, resolve, url=display_url(str(url)))
    if url.scheme == "http" and not _loopback(address):
        raise ValidationError("webhook URLs must use https (plain http only to a loopback address allowed by "
                              "HUBFERRY_FETCH_ALLOW_HOSTS)", hint="use https://...")
    return address


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.strip("[]"))
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _post_signed(client: httpx2.Client, url: httpx2.URL, address: str, *, message_id: str, body: str, secret: str,
                 sent_at: datetime) -> int:
    """POST ``body`` signed as Standard Webhooks to ``address`` (checked for ``url``); the answer's status."""
    signature = Webhook(secret).sign(message_id, sent_at, body)
    headers = {
        "Host": url.netloc.decode("ascii"), "Content-Type": "application/json", "User-Agent": _USER_AGENT,
        "webhook-id": message_id, "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
    }
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    request = client.build_request("POST", url.copy_with(host=address), headers=headers,
                                   content=body.encode(), extensions=extensions)
    response = client.send(request, stream=True)
    response.close()  # the answer's body is not wanted: a hostile receiver cannot make us read it
    return response.status_code


def _client(transport: httpx2.BaseTransport | None) -> httpx2.Client:
    return httpx2.Client(
        transport=transport or httpx2.HTTPTransport(trust_env=False, retries=0), trust_env=False,
        follow_redirects=False, timeout=httpx2.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
    )


def _outcome(status: int) -> str | None:
    """What was wrong with a receiver's answer, or None when it took the event."""
    if 200 <= status < 300:
        return None
    return f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")


@dataclass(frozen=True)
class ProbeResult:
    """How a test event went: the receiver's status (None if none answered), what was wrong, how long it took."""

    url: str
    status: int | None
    error: str | None
    ms: int

    @property
    def ok(self) -> bool:
        return self.error is None


def send_test(settings: Settings, vault: Vault, owner: str, url: str, *, transport: httpx2.BaseTransport | None = None,
              resolve: Resolver = system_resolve, clock: Callable[[], datetime] = utcnow) -> ProbeResult:
    """Send one signed ``webhook.test`` event to ``url`` now, as a delivery would be (same checks, no retry).

    Never raises for the receiver's sake: a refused address, a timeout or an error status is the result's
    ``error`` (shortened, printable, the URL's query and credentials left out).
    """
    started = time.monotonic()
    now = clock()
    body = json.dumps({"type": TEST_EVENT, "timestamp": now.isoformat(),
                       "data": {"owner": owner, "message": "a test event from hubferry's settings page"}},
                      separators=(",", ":"))
    status: int | None = None
    error: str | None = None
    try:
        target = httpx2.URL(url)
        address = _pinned(target, AllowList.parse(settings.fetch_allow_hosts), resolve)
        with _client(transport) as client:
            status = _post_signed(client, target, address, message_id="msg_test_" + secrets.token_hex(12),
                                  body=body, secret=signing_secret(vault, owner), sent_at=now)
        error = _outcome(status)
    except ValidationError as exc:
        error = exc.message
    except (httpx2.InvalidURL, ValueError) as exc:
        error = f"not a valid URL: {exc}"
    except (httpx2.TransportError, HubferryError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    shown = printable(error, keep_newlines=False)[:MAX_ERROR_CHARS] if error else None
    log.info("webhook test sent", owner=owner, status=status, ok=shown is None)
    return ProbeResult(display_url(url), status, shown, int((time.monotonic() - started) * 1000))


def payload(change: StateChange, job: dict[str, Any]) -> dict[str, Any]:
    """The body of one notification (the Standard Webhooks ``type``/``timestamp``/``data`` envelope)."""
    return {
        "type": "job.state_changed",
        "timestamp": change.at.isoformat(),
        "data": {
            "job_id": change.job_id, "seq": change.seq, "from": change.context.get("from"),
            "to": change.context.get("to"), "message": change.message,
            "job": {k: job[k] for k in ("id", "name", "state", "trainer", "repo_id", "repo_url", "commit_sha",
                                        "error", "progress")},
        },
    }


class Sender:
    """Queues and sends the notifications of every job whose owner (or itself) has a target.

    Args:
        jobs: the job store (its engine holds the outbox too).
        vault: where signing secrets live.
        settings: ``fetch_allow_hosts`` is read.
        transport: an httpx2 transport (tests pass ``httpx2.MockTransport``).
        resolve: ``(host, port) -> addresses``; default the system resolver.
        clock: the current time (timezone-aware).
    """

    def __init__(
        self, jobs: JobStore, vault: Vault, settings: Settings, *, transport: httpx2.BaseTransport | None = None,
        resolve: Resolver = system_resolve, clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.jobs = jobs
        self.outbox = Outbox(jobs.engine)
        self.vault = vault
        self._allow = AllowList.parse(settings.fetch_allow_hosts)
        self._resolve = resolve
        self._clock = clock
        self._transport = transport
        self._since: datetime | None = None
        #: (target id, job id) -> the job's newest timeline seq already looked at for that target.
        self._looked: dict[tuple[str, str], int] = {}
        self._idle = threading.Condition()
        self._stop = threading.Event()
        #: Set when an attempt ends, so the next change of that job is sent without waiting for the next scan.
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._open()

    def _open(self) -> None:
        self._client = _client(self._transport)
        self._pool = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="hubferry-webhook")
        self._in_flight = 0  # claims cancelled by a stop are sent again once their hold expires
        self._closed = False

    # -- queueing ----------------------------------------------------------------------------

    def scan(self) -> int:
        """Queue every state change not yet queued for its targets; returns how many were queued."""
        targets = self.outbox.targets()
        now = self._clock()
        since = self._since or now - STARTUP_LOOKBACK
        self._since = now - SCAN_OVERLAP
        if not targets:
            return 0
        by_owner = {t.owner: t for t in targets if t.job_id is None}
        by_job = {t.job_id: t for t in targets if t.job_id is not None}
        queued = 0
        for mark in job_queries.changed_since(self.jobs.engine, since, owners=sorted(by_owner),
                                              job_ids=sorted(j for j in by_job if j)):
            for target in (by_job.get(mark.job_id), by_owner.get(mark.owner)):
                if target is not None and target.owner == mark.owner:
                    queued += self._queue(target, mark.job_id, mark.seq, now)
        if len(self._looked) > 100_000:  # forget, and re-check against the outbox (which dedupes)
            self._looked.clear()
        return queued

    def _queue(self, target: Target, job_id: str, seq: int, now: datetime) -> int:
        key = (target.id, job_id)
        if self._looked.get(key) == seq:
            return 0
        changes = self.outbox.unsent_changes(target, job_id)
        job = self.jobs.get(job_id)
        queued = 0
        if job is not None:
            shown = job_dict(job)
            for change in changes:
                queued += self.outbox.enqueue(target, change, payload(change, shown), now=now)
        self._looked[key] = seq
        return queued

    # -- sending -----------------------------------------------------------------------------

    def send_due(self) -> int:
        """Start an attempt of every due delivery this sender can take on; returns how many it started."""
        with self._idle:
            room = 2 * SEND_THREADS - self._in_flight
        if room <= 0:
            return 0
        started = 0
        now = self._clock()
        for delivery in self.outbox.due(now, limit=room):
            if self.outbox.claim(delivery, now=now, hold=CLAIM_HOLD):
                with self._idle:
                    self._in_flight += 1
                self._pool.submit(self._attempt, delivery)
                started += 1
        return started

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no attempt is in flight; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def _attempt(self, delivery: Delivery) -> None:
        try:
            self._send_and_record(delivery)
        except Exception:  # noqa: BLE001 - a sender thread must survive any one delivery
            log.exception("webhook delivery crashed", delivery_id=delivery.id)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()
            self._wake.set()

    def _send_and_record(self, delivery: Delivery) -> None:
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        give_up = False
        try:
            status = self._post(delivery)
            if status == 410:
                error, give_up = "the receiver answered 410 Gone: not sent again", True
            else:
                error = _outcome(status)
        except ValidationError as exc:  # a refused address or a URL that became unusable
            error, give_up = exc.message, True
        except (httpx2.TransportError, HubferryError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        now = self._clock()
        attempts = delivery.attempts + 1
        ok = error is None
        if ok:
            state, next_at = "delivered", None
        elif give_up or attempts >= MAX_ATTEMPTS:
            state, next_at = "failed", None
        else:
            state, next_at = "pending", now + timedelta(seconds=RETRY_DELAYS_S[attempts - 1])
        shown = printable(error, keep_newlines=False)[:MAX_ERROR_CHARS] if error else None
        elapsed_ms = int((time.monotonic() - started) * 1000)
        entry = {"at": now.isoformat(), "status": status, "error": shown, "ms": elapsed_ms}
        self.outbox.finish_attempt(delivery.id, now=now, state=state, next_at=next_at, status=status, error=shown,
                                   entry=entry)
        log.info("webhook attempt", delivery_id=delivery.id, job_id=delivery.job_id, status=status, state=state)

    def _post(self, delivery: Delivery) -> int:
        job = self.jobs.get(delivery.job_id)
        if job is None:
            raise ValidationError("the job is gone")
        url = httpx2.URL(delivery.url)
        address = _pinned(url, self._allow, self._resolve)
        body = json.dumps(delivery.payload, separators=(",", ":"))
        return _post_signed(self._client, url, address, message_id=delivery.id, body=body,
                            secret=signing_secret(self.vault, job.owner), sent_at=self._clock())

    # -- the thread --------------------------------------------------------------------------

    def run_once(self) -> None:
        try:
            self.scan()
            self.send_due()
        except HubferryError as exc:
            log.warning("webhook sender cycle failed", error=exc.message)

    def start(self) -> None:
        """Scan and send every :data:`SCAN_INTERVAL_S` in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        if self._closed:
            self._open()
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except Exception:  # noqa: BLE001 - e.g. the database briefly unavailable: try again next cycle
                    log.exception("webhook sender cycle crashed")
                self._wake.wait(SCAN_INTERVAL_S)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="hubferry-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
        self._closed = True


def delivery_dict(delivery: Delivery) -> dict[str, Any]:
    """A delivery as the API shows it (the URL without query or credentials: they may hold secrets)."""
    data = delivery.payload.get("data") or {}
    return {
        "id": delivery.id, "event_seq": delivery.event_seq,
        "event": {"type": delivery.payload.get("type"), "from": data.get("from"), "to": data.get("to")},
        "url": display_url(delivery.url), "state": delivery.state, "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_at.isoformat() if delivery.next_at and delivery.state == "pending" else None,
        "last_status": delivery.last_status, "last_error": delivery.last_error,
        "created_at": delivery.created_at.isoformat(), "log": delivery.log,
    }
