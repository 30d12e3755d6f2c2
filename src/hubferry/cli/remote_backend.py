"""The job and secret commands acting on a running service through ``/api/v1`` (see :mod:`hubferry.cli.backend`).

The API's job JSON is the shape of :func:`hubferry.services.views.job_dict`, so the renderers print it as they
print a local job. ``watch`` follows the job's Server-Sent Events (resuming with ``Last-Event-ID``); ``logs show
--follow`` reads the log by byte ranges.
"""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hubferry.cli.console import err, print_json, say
from hubferry.cli.remote import ServiceClient, job_events
from hubferry.cli.render import WATCH_INTERVAL_S, JobView, Snapshot, ended, exit_code, show_live, summary
from hubferry.config import Settings
from hubferry.domain.jobs import EventKind, JobState, StageProgress
from hubferry.errors import ValidationError
from hubferry.secrets.hub_credentials import normalise_endpoint
from hubferry.secrets.vault import HF_TOKEN

#: Jobs asked for per page of ``GET /api/v1/jobs`` (its maximum).
PAGE_SIZE = 200
#: Bytes of log asked for per ranged read.
LOG_CHUNK = 256 * 1024
#: What the service stores of a user's secrets, by the names ``hubferry secrets`` uses.
SERVICE_SECRETS = {HF_TOKEN: "hub", "replicate_token": "replicate", "runpod_api_key": "runpod"}


class RemoteJobs:
    """A service's jobs, as the API token's user sees them."""

    def __init__(self, client: ServiceClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.elsewhere = f"running on the service at {client.url}"
        self._partial: dict[str, str] = {}

    def _job(self, data: dict[str, Any]) -> JobView:
        return JobView(data)

    def list_jobs(self, states: list[JobState] | None, trainers: list[str] | None, limit: int) -> list[JobView]:
        found: list[JobView] = []
        cursor = None
        while len(found) < limit:
            params: dict[str, Any] = {"limit": min(PAGE_SIZE, limit - len(found))}
            if states:
                params["state"] = [s.value for s in states]
            if trainers:
                params["trainer"] = trainers
            if cursor:
                params["cursor"] = cursor
            page = self.client.json("GET", "/api/v1/jobs", params=params)
            found += [self._job(j) for j in page["jobs"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return found

    def show(self, job_id: str) -> JobView:
        return self._job(self.client.json("GET", f"/api/v1/jobs/{_path(job_id)}"))

    def cancel(self, job_id: str) -> JobView:
        return self._job(self.client.json("POST", f"/api/v1/jobs/{_path(job_id)}/cancel"))

    def retry(self, job_id: str, *, token: str | None, repo: str | None,
              endpoint: str | None) -> tuple[JobView, bool]:
        body = {k: v for k, v in {"token": token or self.settings.shell_token(), "repo_id": repo,
                                  "endpoint": endpoint}.items() if v}
        return self._job(self.client.json("POST", f"/api/v1/jobs/{_path(job_id)}/retry", json=body)), True

    def watch(self, job_id: str, *, show: bool = True) -> JobView:
        first = self.show(job_id)
        show_live(self._snapshots(first), show=show)
        return self.show(job_id) if not ended(first) else first

    def _snapshots(self, first: JobView) -> Iterator[Snapshot]:
        state, progress = first.state, first.progress
        tail, tailed = self._tail(first.id), time.monotonic()
        yield Snapshot(state, progress, tail)
        if ended(state):
            return
        for event in job_events(self.client, first.id):
            if event.event == "progress" and isinstance(event.data, dict):
                data = event.data
                state = JobState(data["state"])
                progress = StageProgress(stage=data.get("stage"), percent=data.get("percent"), step=data.get("step"),
                                         total_steps=data.get("total_steps"), loss=data.get("loss"),
                                         eta_seconds=data.get("eta_seconds"))
            if time.monotonic() - tailed >= WATCH_INTERVAL_S or ended(state):
                tail, tailed = self._tail(first.id), time.monotonic()
            yield Snapshot(state, progress, tail)
            if ended(state):
                return

    def _tail(self, job_id: str) -> str:
        return str(self.client.json("GET", f"/api/v1/jobs/{_path(job_id)}/log", params={"tail": 4})["text"])

    def log_tail(self, job_id: str, lines: int) -> tuple[str, str]:
        from hubferry.cli.backend import no_log_yet

        job = self.show(job_id)
        if not job.get("log_path"):
            raise no_log_yet(job_id, job.state)
        chunk = self.client.json("GET", f"/api/v1/jobs/{_path(job_id)}/log", params={"tail": min(lines, 10_000)})
        self._partial[job_id] = ""
        rows = [row for row in str(chunk["text"]).split("\n") if row.strip()]  # as the local tail shows it
        return "\n".join(rows[-lines:]), str(chunk["next_offset"])

    def log_after(self, job_id: str, cursor: str, *, final: bool) -> tuple[list[str], str]:
        text, offset = self._partial.get(job_id, ""), int(cursor or 0)
        while True:
            chunk = self.client.json("GET", f"/api/v1/jobs/{_path(job_id)}/log",
                                     params={"offset": offset, "length": LOG_CHUNK})
            text += str(chunk["text"])
            offset = int(chunk["next_offset"])
            if offset >= int(chunk["size"]) or not chunk["text"]:
                break
        end = len(text) if final else max(text.rfind("\n"), text.rfind("\r")) + 1
        self._partial[job_id] = text[end:]
        complete = text[:end].replace("\r\n", "\n").replace("\r", "\n")
        return [line for line in complete.split("\n") if line], str(offset)

    # -- train ------------------------------------------------------------------------------------

    def train(self, kind: str, options: dict[str, Any], command: list[str], *, wait: bool, json_output: bool,
              config_file: Path | None = None) -> int:
        """``hubferry train`` on the service: create the job, say so, and with ``wait`` follow it to its end.

        Args:
            config_file: a RunPod job's training config (``-f``).

        Returns:
            The exit code, as the local ``train`` gives it.
        """
        if kind == "local":
            body = self._local_body(options, command)
        elif kind == "replicate":
            body = self._replicate_body(options)
        elif kind == "runpod":
            body = self._runpod_body(options, config_file)
        else:
            raise ValidationError(f"the {kind} trainer cannot be started through the service from the CLI yet",
                                  field="trainer", hint="use the dashboard or POST /api/v1/jobs, or unset "
                                  "HUBFERRY_URL and HUBFERRY_API_TOKEN to run it from this machine")
        job = self._job(self.client.json("POST", "/api/v1/jobs", json=body))
        say(f"job {job.id}: ", f"{job.get('name')} -> {job.get('repo_id')} (output {job.get('output_dir')})")
        for event in self.show(job.id).timeline:
            if event.kind is EventKind.NOTICE and event.message.startswith("warning:"):
                say("", event.message, style="yellow")
        say(f"{self.elsewhere}; follow it with ", f"hubferry watch {job.id}")
        if not wait:
            if json_output:
                print_json({"id": job.id})
            return 0
        final = self.watch(job.id, show=not json_output or err.is_terminal)
        summary(final)
        if json_output:
            print_json(dict(final.data))
        return exit_code(final)

    def _common(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"name": options.get("name"), "repo_id": options.get("repo"), "private": options.get("private", True),
                "endpoint": options.get("endpoint"), "token": options.get("token") or self.settings.shell_token(),
                "preflight": not options.get("skip_preflight")}

    def _local_body(self, options: dict[str, Any], command: list[str]) -> dict[str, Any]:
        if not command:
            raise ValidationError("no training command", hint="give the command after --, e.g. -- python train.py")
        pass_env = list(options.get("pass_env") or ())
        missing = [name for name in pass_env if name not in os.environ]
        if missing:
            raise ValidationError(f"--pass-env names variables that are not set: {', '.join(missing)}",
                                  field="pass_env", hint="export them first, or drop them from --pass-env")
        output = options.get("output")
        return _without_none({
            **self._common(options), "trainer": "local", "command": command,
            "output_dir": str(Path(output).expanduser().resolve()) if output else None,
            "cwd": str(Path.cwd()), "env": {name: os.environ[name] for name in pass_env}, "pass_env": pass_env,
            "total_steps": options.get("total_steps"),
        })

    def _replicate_body(self, options: dict[str, Any]) -> dict[str, Any]:
        from hubferry.cli.job_files import parse_params
        from hubferry.domain.naming import slugify

        images = options.get("images")
        if not images:
            raise ValidationError("--images is required for this trainer", field="images")
        source = Path(str(images)).expanduser()
        upload_id = self.upload_dataset(source)
        return _without_none({
            **self._common(options), "trainer": "replicate", "dataset": {"upload_id": upload_id},
            "name": options.get("name") or slugify(source.stem) or None,
            "trigger_word": options.get("trigger_word"), "steps": options.get("steps"),
            "learning_rate": options.get("learning_rate"), "lora_rank": options.get("lora_rank"),
            "params": parse_params(options.get("param")),
            "replicate_token": options.get("replicate_token") or _secret(self.settings.replicate_token),
            "replicate_trainer": options.get("replicate_trainer"), "destination": options.get("destination"),
        })

    def _runpod_body(self, options: dict[str, Any], config_file: Path | None) -> dict[str, Any]:
        from hubferry import training_config

        if config_file is None:
            raise ValidationError("--trainer runpod needs its training config", field="file",
                                  hint="pass -f job.toml (see examples/runpod_sft.toml; `hubferry config check` "
                                  "validates one)")
        config = training_config.load(config_file)  # every problem named with its line, before any request
        upload_id = None
        if config.dataset_is_local:
            upload_id = self.upload_dataset(config_file.parent / Path(config.dataset).expanduser(), field="dataset")
        return _without_none({
            **self._common(options), "trainer": "runpod", "config": _table(config_file),
            "dataset": {"upload_id": upload_id} if upload_id else None, "gpu": options.get("gpu"),
            "cloud_type": options.get("cloud_type"), "image": options.get("image"),
            "runpod_key": options.get("runpod_key") or _secret(self.settings.runpod_api_key),
            "token_in_env": bool(options.get("token_in_env")),
        })

    def upload_dataset(self, source: Path, *, field: str = "images") -> str:
        """Upload a local dataset (a folder is zipped as it is; the service checks and packs it); returns its id.

        Raises:
            ValidationError: the path does not exist or cannot be read.
        """
        if not source.exists():
            raise ValidationError(f"the dataset {source} does not exist", field=field, category="file_error",
                                  path=str(source), hint="pass a folder of images, a zip, or a text file of URLs")
        with tempfile.TemporaryDirectory(prefix="hubferry-upload-") as tmp:
            upload = _zip_folder(source, Path(tmp) / f"{source.name or 'dataset'}.zip") if source.is_dir() else source
            say("uploading the dataset to the service: ", str(source))
            try:
                with upload.open("rb") as fh:
                    answer = self.client.json("POST", "/api/v1/datasets", files={"file": (upload.name, fh)})
            except OSError as exc:
                raise ValidationError(f"cannot read {upload}: {exc.strerror}", category="file_error",
                                      path=str(upload), hint="check the path and its permissions") from None
        return str(answer["id"])


class RemoteSecrets:
    """The API token's user's secrets on the service (``/api/v1/secrets``); values are never read back."""

    def __init__(self, client: ServiceClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def owner(self, owner: str | None) -> str:
        me = str(self.client.json("GET", "/api/v1/session")["user"]["name"])
        if owner is not None and owner != me:
            raise ValidationError(f"--owner {owner}: through the service you act on your own secrets only "
                                  f"(the API token's user, {me})", field="owner", hint="drop --owner")
        return me

    @staticmethod
    def _kind(name: str) -> str:
        if name not in SERVICE_SECRETS:
            raise ValidationError(f"the service stores no secret named {name!r}", field="name",
                                  hint="one of " + ", ".join(SERVICE_SECRETS))
        return SERVICE_SECRETS[name]

    def _endpoint(self, endpoint: str | None) -> str:
        return normalise_endpoint(endpoint or self.settings.resolved_endpoint())

    def set(self, owner: str, name: str, value: str, endpoint: str | None) -> str | None:
        kind = self._kind(name)
        if kind == "hub":
            where = self._endpoint(endpoint)
            self.client.json("PUT", "/api/v1/secrets/hub", json={"endpoint": where, "token": value})
            return where
        self.client.json("PUT", f"/api/v1/secrets/{kind}", json={"token": value})
        return None

    def entries(self, owner: str) -> list[dict[str, str | None]]:
        stored = self.client.json("GET", "/api/v1/secrets")
        listed: list[dict[str, str | None]] = [
            {"name": HF_TOKEN, "endpoint": h["endpoint"], "username": h.get("username"), "last4": h.get("last4"),
             "updated_at": h.get("checked_at")} for h in stored.get("hub", [])
        ]
        for name, kind in SERVICE_SECRETS.items():
            entry = stored.get(kind) if kind != "hub" else None
            if entry and entry.get("set"):
                listed.append({"name": name, "updated_at": entry.get("checked_at") or entry.get("updated_at")})
        return listed

    def delete(self, owner: str, name: str, endpoint: str | None) -> bool:
        kind = self._kind(name)
        params = {"endpoint": self._endpoint(endpoint)} if kind == "hub" else None
        try:
            self.client.request("DELETE", f"/api/v1/secrets/{kind}", params=params)
        except ValidationError as exc:
            if "not found" in exc.message:
                return False
            raise
        return True


def _path(job_id: str) -> str:
    """A job id as one path segment (an id with a slash or dot-dots must not name another route)."""
    from urllib.parse import quote

    return quote(job_id, safe="")


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def _table(config_file: Path) -> dict[str, Any]:
    """A training config file as the table the API takes (already validated by ``training_config.load``)."""
    import tomllib

    text = config_file.read_text("utf-8")
    if config_file.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = tomllib.loads(text)
    return dict(data)


def _zip_folder(folder: Path, dest: Path) -> Path:
    """The regular files of ``folder`` (links and hidden files left out) in a zip, stored as they are."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_symlink() or not path.is_file() or any(part.startswith(".") for part in relative.parts):
                continue
            archive.write(path, relative.as_posix())
    return dest
