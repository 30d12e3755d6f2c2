"""``hubferry hub`` commands, the registry as a separate process, and its HTML pages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import get_session

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
