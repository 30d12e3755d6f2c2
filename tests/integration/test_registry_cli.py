"""``hubferry hub`` commands, the registry as a separate process, and its HTML pages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import get_session

from hubferry.registry.auth import principal_for_token
from hubferry.registry.storage import make_engine
from hubferry.testing import RunningRegistry, registry_process


def _hub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubferry.registry", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_token_create_prints_only_the_token(tmp_path: Path) -> None:
    result = _hub("token", "create", "dave", "--data", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"hf_[A-Za-z]{34}\n", result.stdout)
    assert "dave" in result.stderr
    read_only = _hub("token", "create", "dave", "--data", str(tmp_path), "--read-only")
    assert read_only.returncode == 0 and read_only.stdout.strip() != result.stdout.strip()


def test_token_create_rejects_bad_user(tmp_path: Path) -> None:
    result = _hub("token", "create", "api", "--data", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "reserved" in result.stderr


def test_serve_as_a_process_with_cli_token(tmp_path: Path, hf_env) -> None:
    data = tmp_path / "hub"
    token = _hub("token", "create", "erin", "--data", str(data)).stdout.strip()
    with registry_process(data, tree_page_size=2) as hub:
        api = HfApi(endpoint=hub.endpoint, token=token)
        assert api.whoami()["name"] == "erin"
        api.create_repo("erin/proc")
        api.upload_file(path_or_fileobj=b"a", path_in_repo="a.txt", repo_id="erin/proc")
        assert sorted(api.list_repo_files("erin/proc")) == [".gitattributes", "a.txt"]
        assert HfApi(endpoint=hub.endpoint, token=hub.create_token("frank")).whoami()["name"] == "frank"


def test_html_pages_list_public_repos_and_escape(api: HfApi, registry: RunningRegistry) -> None:
    api.create_repo("alice/page-public")
    api.create_repo("alice/page-private", private=True)
    api.upload_file(path_or_fileobj=b"<b>", path_in_repo="<script>x.txt", repo_id="alice/page-public",
                    commit_message="<img src=x onerror=alert(1)>")  # fmt: skip
    session = get_session()
    index = session.get(f"{registry.endpoint}/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "alice/page-public" in index.text
    assert "alice/page-private" not in index.text

    page = session.get(f"{registry.endpoint}/alice/page-public")
    assert page.status_code == 200
    assert "&lt;script&gt;x.txt" in page.text and "<script>x.txt" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "initial commit" in page.text
    assert session.get(f"{registry.endpoint}/alice/page-private").status_code == 404
    assert session.get(f"{registry.endpoint}/health").json()["status"] == "ok"


def test_token_list_shows_prefixes_and_revoke_takes_an_id_or_prefix(tmp_path: Path) -> None:
    first = _hub("token", "create", "gina", "--data", str(tmp_path), "--name", "laptop").stdout.strip()
    second = _hub("token", "create", "gina", "--data", str(tmp_path), "--read-only").stdout.strip()
    listing = _hub("token", "list", "--data", str(tmp_path), "--user", "gina")
    assert listing.returncode == 0, listing.stderr
    assert first not in listing.stdout and second not in listing.stdout
    assert f"{first[:9]}..." in listing.stdout and "laptop" in listing.stdout and "read" in listing.stdout

    revoked = _hub("token", "revoke", first[:9], "--data", str(tmp_path))
    assert revoked.returncode == 0 and "laptop" in revoked.stderr
    assert first[:9] not in _hub("token", "list", "--data", str(tmp_path)).stdout
    engine = make_engine(tmp_path)
    try:
        assert principal_for_token(engine, first) is None
        assert principal_for_token(engine, second).user == "gina"  # type: ignore[union-attr]
    finally:
        engine.dispose()


def test_bad_input_is_a_message_and_exit_2(tmp_path: Path) -> None:
    _hub("token", "create", "hank", "--data", str(tmp_path))
    cases = {
        ("token", "revoke", "hf_Zz", "--data", str(tmp_path)): "No token matches",
        ("token", "revoke", "nonsense", "--data", str(tmp_path)): "neither a token id nor a token prefix",
        ("token", "list", "--user", "nobody", "--data", str(tmp_path)): "No user 'nobody'",
        ("repos", "--data", str(tmp_path / "typo")): "no registry data in",
    }
    for args, message in cases.items():
        result = _hub(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr


def test_repos_lists_private_repos_as_json_and_data_defaults_to_hubferry_home(tmp_path: Path, hf_env) -> None:
    env_home = tmp_path / "home"
    data = env_home / "hub"
    token = _hub("token", "create", "ivy", "--data", str(data)).stdout.strip()
    with registry_process(data) as hub:
        api = HfApi(endpoint=hub.endpoint, token=token)
        api.create_repo("ivy/open")
        api.create_repo("ivy/closed", private=True)
    result = subprocess.run(
        [sys.executable, "-m", "hubferry.registry", "repos", "--json", "--user", "ivy"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**{k: v for k, v in os.environ.items() if k != "HUBFERRY_HUB_DATA_DIR"}, "HUBFERRY_HOME": str(env_home)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    repos = {item["id"]: item for item in json.loads(result.stdout)}
    assert set(repos) == {"ivy/open", "ivy/closed"}
    assert repos["ivy/closed"]["private"] is True and len(repos["ivy/open"]["head"]) == 40
    help_text = _hub("repos", "--help").stdout
    assert "$HUBFERRY_HOME/hub" in help_text
