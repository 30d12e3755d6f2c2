"""Local parts of publishing: manifest, batching, secret scan, card, retry policy, error mapping."""

from __future__ import annotations

import hashlib
import pickle

import httpx2
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError

import hubferry
from hubferry.errors import PermanentError, TransientError, ValidationError
from hubferry.hub import card, manifest, preflight, retry, secret_scan
from hubferry.hub.failures import classify
from hubferry.hub.upload import plan_batches


def test_public_api_is_exactly_the_documented_list():
    assert sorted(hubferry.__all__) == sorted([
        "CardInfo", "ConfigError", "HubferryError", "PermanentError", "Publication", "PushProgress",
        "TransientError", "ValidationError", "VerificationError", "publish",
    ])


def test_manifest_hashes_match_hashlib_and_git(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_bytes(b"hello\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    files = {f.path_in_repo: f for f in manifest.build(manifest.select_paths(tmp_path), git_sha1_limit=10)}
    assert set(files) == {"sub/a.txt", "empty"}
    assert files["sub/a.txt"].sha256 == hashlib.sha256(b"hello\n").hexdigest()
    # `git hash-object` of "hello\n" and of the empty blob:
    assert files["sub/a.txt"].git_sha1 == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert files["empty"].git_sha1 == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_manifest_include_exclude_and_large_files_skip_sha1(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "notes.log").write_text("log")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "s.bin").write_bytes(b"y")
    files = manifest.build(manifest.select_paths(tmp_path, exclude=["*.log", "ckpt"]), git_sha1_limit=10)
    assert [f.path_in_repo for f in files] == ["w.safetensors"]
    assert files[0].git_sha1 is None
    only = manifest.build(manifest.select_paths(tmp_path, include=["ckpt/*"]), git_sha1_limit=10)
    assert [f.path_in_repo for f in only] == ["ckpt/s.bin"]


def test_manifest_refuses_a_missing_folder(tmp_path):
    with pytest.raises(ValidationError, match="is not a folder"):
        manifest.select_paths(tmp_path / "nope")


def _files(*sizes):
    return [manifest.LocalFile(f"f{i}", s, "0" * 64, None) for i, s in enumerate(sizes)]


def test_batches_respect_file_count_and_inline_bytes():
    batches = plan_batches(_files(*[1] * 7), max_files=3, max_regular_bytes=100, regular_limit=10)
    assert [len(b) for b in batches] == [3, 3, 1]
    batches = plan_batches(_files(6, 6, 50, 6), max_files=10, max_regular_bytes=10, regular_limit=10)
    # 50 is LFS (over the regular limit) and does not count against inline bytes.
    assert [[f.size for f in b] for b in batches] == [[6], [6, 50], [6]]


def test_secret_scan_finds_each_kind_with_file_and_line(tmp_path):
    text = "\n".join([
        "ok line",
        'token: "hf_' + "a" * 34 + '"',
        "REPLICATE=r8_" + "B" * 37,
        "key=AKIA" + "ABCDEFGHIJKLMNOP",
        "aws_secret_access_key = " + "x" * 40,
        "WANDB_API_KEY=" + "0123456789abcdef" * 2 + "01234567",
    ])
    (tmp_path / "config.yaml").write_text(text)
    (tmp_path / "weights.bin").write_bytes(("hf_" + "a" * 34).encode())
    _files, findings = manifest.hash_all(manifest.select_paths(tmp_path), git_sha1_limit=1 << 20, scan=[])
    assert [(f.path, f.line) for f in findings] == [("config.yaml", n) for n in (2, 3, 4, 5, 6)]
    with pytest.raises(ValidationError) as info:
        secret_scan.refuse(findings)
    assert "config.yaml:2" in str(info.value) and "a" * 34 not in str(info.value)


def test_secret_scan_finds_the_push_token_literally():
    findings = secret_scan.scan_text("README.md", "my token is sekrit-value-123", extra=["sekrit-value-123"])
    assert findings and findings[0].kind == "the token used for this push"


def test_card_is_valid_and_carries_training_facts(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"base_model_name_or_path": "tiny/base", "r": 8}')
    (tmp_path / "training_args.json").write_text('{"steps": 100, "lr": 0.005, "hf_token": "nope", "seed": 0}')
    info = card.complete_from_folder(card.CardInfo(trigger_word="hbfry", license="mit"), tmp_path)
    text = card.render(info, "alice/demo")
    parsed = ModelCard(text)
    assert parsed.data.base_model == "tiny/base" and parsed.data.license == "mit"
    assert "lora" in parsed.data.tags and "hbfry" in text and "| steps | 100 |" in text
    assert "hf_token" not in text


def test_repo_id_validation():
    assert preflight.check_repo_id("alice/my-model") == ("alice", "my-model")
    for bad in ("alice", "a/b/c", "alice/bad--name", "alice/x" + "y" * 100, "al ice/x"):
        with pytest.raises(ValidationError):
            preflight.check_repo_id(bad)


def _http_error(status, headers=None):
    request = httpx2.Request("POST", "http://hub.test/api/models/a/b/commit/main")
    response = httpx2.Response(status, headers=headers or {}, request=request, text='{"error":"boom"}')
    return HfHubHTTPError(f"{status} boom", response=response, server_message="boom")


@pytest.mark.parametrize(("status", "kind", "category"), [
    (401, PermanentError, "authentication"), (403, PermanentError, "authentication"),
    (404, PermanentError, "validation"), (429, TransientError, "rate_limit"),
    (500, TransientError, "service_error"), (503, TransientError, "service_error"),
    (408, TransientError, "timeout"), (413, PermanentError, "validation"),
])
def test_http_statuses_map_to_the_error_tree(status, kind, category):
    error = classify(_http_error(status), what="create commit", endpoint="http://hub.test")
    assert type(error) is kind and error.category == category
    assert error.status == status and error.url.startswith("http://hub.test/") and error.hint
    assert pickle.loads(pickle.dumps(error)).to_dict() == error.to_dict()


def test_network_errors_are_transient():
    assert classify(httpx2.ConnectError("refused"), what="x", endpoint="e").category == "network"
    assert classify(httpx2.ReadTimeout("slow"), what="x", endpoint="e").category == "timeout"


def test_retry_honours_retry_after_and_stops_on_permanent():
    slept: list[float] = []
    policy = retry.RetryPolicy(max_attempts=3, base_delay=0.01, sleep=slept.append)
    calls = iter([_http_error(429, {"Retry-After": "7"}), _http_error(503), "ok"])

    def fn():
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert retry.call(fn, what="x", endpoint="e", policy=policy) == "ok"
    assert slept[0] == 7.0 and 0.01 <= slept[1] <= 0.02  # full jitter in [ceiling/2, ceiling]
    attempts = []

    def denied():
        attempts.append(1)
        raise _http_error(401)

    with pytest.raises(PermanentError) as info:
        retry.call(denied, what="whoami", endpoint="e", policy=policy)
    assert len(attempts) == 1 and info.value.attempt == 1


def test_retry_gives_up_with_attempt_and_elapsed():
    policy = retry.RetryPolicy(max_attempts=3, base_delay=0, sleep=lambda s: None)

    def down():
        raise _http_error(503)

    with pytest.raises(TransientError) as info:
        retry.call(down, what="x", endpoint="e", policy=policy)
    assert info.value.attempt == 3 and info.value.elapsed_s >= 0 and "gave up after 3" in info.value.hint


def test_before_retry_short_circuits_a_landed_commit():
    policy = retry.RetryPolicy(max_attempts=5, base_delay=0, sleep=lambda s: None)
    sent = []

    def send():
        sent.append(1)
        raise _http_error(503)

    assert retry.call(send, what="c", endpoint="e", policy=policy, before_retry=lambda e: "landed") == "landed"
    assert len(sent) == 1


def test_upload_groups_start_each_large_file_alone_and_group_small_ones():
    from hubferry.hub.upload import SMALL_FILES_PER_CALL, upload_groups

    files = _files(1, 2, *[100] * 12, *[1] * (SMALL_FILES_PER_CALL + 1))  # two small, twelve large, many tiny
    groups = [[f.size for f in g] for g in upload_groups(files, regular_limit=10, small_bytes=1000)]
    # Each large file is its own preupload call, so up to PARALLEL_UPLOADS of them transfer at once
    # and each starts as soon as it is hashed; small files share calls of bounded count and bytes.
    assert groups[:12] == [[100]] * 12
    assert [len(g) for g in groups[12:]] == [SMALL_FILES_PER_CALL, 3]
    assert sum(len(g) for g in groups) == len(files)
    assert [[f.size for f in g] for g in upload_groups(_files(6, 6, 6), regular_limit=10, small_bytes=12)] == [
        [6, 6], [6],
    ]


def test_redaction_masks_token_shapes_and_signed_queries():
    from hubferry.logs import redact

    text = "python train.py --hf_token hf_" + "a" * 34 + " --r r8_" + "B" * 37 + " http://h/lfs/x?sig=1&exp=2"
    assert redact(text) == "python train.py --hf_token hf_*** --r r8_*** http://h/lfs/x?<redacted>"


def test_names_are_published_in_nfc_and_two_spellings_of_one_name_are_refused(tmp_path):
    import unicodedata

    from hubferry.errors import ValidationError
    from hubferry.hub import selection

    nfd = unicodedata.normalize("NFD", "café.txt")
    (tmp_path / nfd).write_text("x")
    assert [s.path_in_repo for s in selection.select(tmp_path)] == [unicodedata.normalize("NFC", "café.txt")]
    (tmp_path / unicodedata.normalize("NFC", "café.txt")).write_text("y")
    with pytest.raises(ValidationError, match="NFC"):
        selection.select(tmp_path)
