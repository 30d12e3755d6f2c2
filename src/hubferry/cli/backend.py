"""Where the CLI's job and secret commands act: the local database, or a running service.

One choice, made here from :class:`~hubferry.config.Settings`: with ``HUBFERRY_URL`` and ``HUBFERRY_API_TOKEN``
set, :func:`jobs_backend` and :func:`secrets_backend` return the service's implementations
(:mod:`hubferry.cli.remote_backend`), otherwise the local ones below. Commands are written once against the
protocols; both sides hand the renderers the same job JSON (:class:`~hubferry.cli.render.JobView`), so the
output is the same. Commands that only make sense on this machine call :func:`local_only`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hubferry.cli.render import JobView, watch_job
from hubferry.config import Settings, load_settings
from hubferry.domain.jobs import JobState
from hubferry.errors import ValidationError

if TYPE_CHECKING:
    from hubferry.cli.remote_backend import RemoteJobs
    from hubferry.services.context import Context


class JobsBackend(Protocol):
    """What the job commands (``jobs``, ``watch``, ``cancel``, ``retry``, ``logs show``) need."""

    #: How a job started by ``retry`` runs, as ``retry`` says it ("queued for the workers").
    elsewhere: str

    def list_jobs(self, states: list[JobState] | None, trainers: list[str] | None, limit: int) -> list[JobView]:
        """Jobs newest first, only those in ``states`` and of ``trainers`` when given."""
        ...

    def show(self, job_id: str) -> JobView:
        """The job with its timeline (a remote training refreshed from its provider when stale)."""
        ...

    def cancel(self, job_id: str) -> JobView: ...

    def retry(self, job_id: str, *, token: str | None, repo: str | None,
              endpoint: str | None) -> tuple[JobView, bool]:
        """Retry a job; returns it and whether it now runs elsewhere (else it already ran here)."""
        ...

    def watch(self, job_id: str, *, show: bool = True) -> JobView:
        """Show the job live until it ends; returns it then, with its timeline."""
        ...

    def log_tail(self, job_id: str, lines: int) -> tuple[str, str]:
        """The log's last ``lines`` lines and a cursor after them."""
        ...

    def log_after(self, job_id: str, cursor: str, *, final: bool) -> tuple[list[str], str]:
        """Complete log lines after ``cursor`` (all of them when ``final``) and the next cursor."""
        ...


class SecretsBackend(Protocol):
    """What ``secrets set|list|delete`` need."""

    def owner(self, owner: str | None) -> str:
        """Whose secrets the command acts on."""
        ...

    def set(self, owner: str, name: str, value: str, endpoint: str | None) -> str | None:
        """Store a secret; returns the endpoint an ``hf_token`` was stored for."""
        ...

    def entries(self, owner: str) -> list[dict[str, str | None]]: ...

    def delete(self, owner: str, name: str, endpoint: str | None) -> bool: ...


def remote_jobs(settings: Settings | None = None) -> RemoteJobs | None:
    """The service's jobs when HUBFERRY_URL and HUBFERRY_API_TOKEN are set, else None.

    Raises:
        ConfigError: only one of them is set.
    """
    settings = settings or load_settings()
    service = settings.service()
    if service is None:
        return None
    from hubferry.cli.remote import ServiceClient
    from hubferry.cli.remote_backend import RemoteJobs

    return RemoteJobs(ServiceClient(*service, connect_timeout=settings.connect_timeout,
                                    read_timeout=settings.read_timeout), settings)


def jobs_backend(settings: Settings | None = None) -> JobsBackend:
    """The service's jobs when one is configured, else this machine's database."""
    settings = settings or load_settings()
    remote = remote_jobs(settings)
    if remote is not None:
        return remote
    from hubferry.services.context import open_context

    return LocalJobs(open_context(settings))


def secrets_backend(settings: Settings | None = None) -> SecretsBackend:
    """The service's secrets of the token's user when one is configured, else this machine's vault."""
    settings = settings or load_settings()
    remote = remote_jobs(settings)
    if remote is not None:
        from hubferry.cli.remote_backend import RemoteSecrets

        return RemoteSecrets(remote.client, settings)
    return LocalSecrets(settings)


def local_only(command: str) -> None:
    """Refuse ``command`` when the CLI is set to talk to a service: it acts on this machine only, and doing
    so silently would look like it acted on the service.

    Raises:
        ValidationError: HUBFERRY_URL and HUBFERRY_API_TOKEN are set.
        ConfigError: only one of them is set.
    """
    service = load_settings().service()
    if service is not None:
        raise ValidationError(
            f"`hubferry {command}` works on this machine's database only, and the CLI is set to use the service at "
            f"{service[0]}", hint="run it on the service's machine, or unset HUBFERRY_URL and HUBFERRY_API_TOKEN to "
            "run it here")


class LocalJobs:
    """The jobs of this machine's database."""

    elsewhere = "queued for the workers"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def list_jobs(self, states: list[JobState] | None, trainers: list[str] | None, limit: int) -> list[JobView]:
        from hubferry.store import job_queries

        if not trainers:
            return [JobView.of(job) for job in self.ctx.jobs.list_jobs(states=states, limit=limit)]
        ids = job_queries.page_ids(self.ctx.jobs.engine, owner=None, states=[s.value for s in states or ()],
                                   trainers=trainers, limit=limit)
        return [JobView.of(job) for job in (self.ctx.jobs.get(job_id) for job_id, _ in ids) if job is not None]

    def show(self, job_id: str) -> JobView:
        from hubferry.services import remote

        job = remote.refresh(self.ctx, job_id)  # a remote training is read from its provider when stale
        return JobView.of(job, self.ctx.jobs.events(job_id))

    def cancel(self, job_id: str) -> JobView:
        from hubferry.services import control

        return JobView.of(control.cancel(self.ctx, job_id))

    def retry(self, job_id: str, *, token: str | None, repo: str | None,
              endpoint: str | None) -> tuple[JobView, bool]:
        from hubferry.services import control
        from hubferry.worker.dispatch import dispatcher_for

        dispatcher, queued = dispatcher_for(self.ctx)
        self.ctx.dispatcher = dispatcher
        job = control.retry(self.ctx, job_id, token=token, repo_id=repo, endpoint=endpoint)
        return JobView.of(self.ctx.jobs.require(job.id), self.ctx.jobs.events(job.id)), queued

    def watch(self, job_id: str, *, show: bool = True) -> JobView:
        self.ctx.jobs.require(job_id)
        job = watch_job(self.ctx, job_id, show=show)
        return JobView.of(job, self.ctx.jobs.events(job_id))

    def _log(self, job_id: str) -> Path:
        job = self.ctx.jobs.require(job_id)
        if not job.log_path:
            raise no_log_yet(job_id, job.state)
        return Path(job.log_path)

    def log_tail(self, job_id: str, lines: int) -> tuple[str, str]:
        from hubferry.tracking.logfile import tail

        path = self._log(job_id)
        text = tail(path, lines)
        return text, str(path.stat().st_size if path.exists() else 0)

    def log_after(self, job_id: str, cursor: str, *, final: bool) -> tuple[list[str], str]:
        from hubferry.tracking.logfile import read_lines

        return read_lines(self._log(job_id), cursor, final=final)


def no_log_yet(job_id: str, state: JobState) -> ValidationError:
    return ValidationError(f"job {job_id} has no log yet (state {state.value})",
                           hint=f"`hubferry watch {job_id}` follows it once training starts")


class LocalSecrets:
    """Secrets in this machine's vault, of the OS user (or ``--owner``)."""

    def __init__(self, settings: Settings) -> None:
        from hubferry.secrets.vault import Vault

        self.settings = settings
        self.vault = Vault.from_settings(settings)

    def owner(self, owner: str | None) -> str:
        from hubferry.services.identity import default_owner

        if owner is None:
            return default_owner()
        if not owner.strip():
            raise ValidationError("the owner is empty", field="owner", hint="pass --owner NAME")
        return owner

    def _endpoint(self, endpoint: str | None) -> str:
        from hubferry.secrets.hub_credentials import normalise_endpoint

        return normalise_endpoint(endpoint or self.settings.resolved_endpoint())

    def set(self, owner: str, name: str, value: str, endpoint: str | None) -> str | None:
        from hubferry.secrets.hub_credentials import HubCredentials
        from hubferry.secrets.vault import HF_TOKEN

        if name == HF_TOKEN:
            where = self._endpoint(endpoint)
            HubCredentials(self.vault).set(owner, where, value)
            return where
        self.vault.set(owner, name, value)
        return None

    def entries(self, owner: str) -> list[dict[str, str | None]]:
        from hubferry.secrets.hub_credentials import HubCredentials, is_credential_entry
        from hubferry.secrets.vault import HF_TOKEN

        listed: list[dict[str, str | None]] = [
            {"name": e.name, "updated_at": e.updated_at} for e in self.vault.entries(owner)
            if not is_credential_entry(e.name)
        ]
        listed += [
            {"name": HF_TOKEN, "endpoint": c.endpoint, "username": c.username, "last4": c.token[-4:],
             "updated_at": c.updated_at}
            for c in HubCredentials(self.vault).list(owner)
        ]
        return listed

    def delete(self, owner: str, name: str, endpoint: str | None) -> bool:
        from hubferry.secrets.hub_credentials import HubCredentials
        from hubferry.secrets.vault import HF_TOKEN

        if name == HF_TOKEN:
            return HubCredentials(self.vault).delete(owner, self._endpoint(endpoint))
        return self.vault.delete(owner, name)
