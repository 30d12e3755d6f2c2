"""A library is a guest: importing hubferry, or calling ``hubferry.publish()`` from someone's script,
leaves that process's logging (stdlib, structlog, huggingface_hub) and signal handlers as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

#: Prints what a process's global logging and signal set-up looks like, as JSON.
_SNAPSHOT = textwrap.dedent(
    """
    import json, logging, signal, structlog
    # huggingface_hub gives its own logger a handler when first imported: that is the baseline, not ours.
    import huggingface_hub.hf_api

    def snapshot():
        def logger(name):
            lg = logging.getLogger(name)
            handlers = [(repr(h), [repr(f) for f in h.filters], repr(h.formatter)) for h in lg.handlers]
            return {"level": lg.level, "handlers": handlers,
                    "filters": [repr(f) for f in lg.filters], "propagate": lg.propagate,
                    "disabled": lg.disabled}
        return {
            "structlog_configured": structlog.is_configured(),
            "structlog_config": repr(structlog.get_config()),
            "root": logger(None), "huggingface_hub": logger("huggingface_hub"),
            "hubferry": logger("hubferry"), "disable": logging.root.manager.disable,
            "sigint": repr(signal.getsignal(signal.SIGINT)), "sigterm": repr(signal.getsignal(signal.SIGTERM)),
        }
    """
)


def _run(script: str, env: dict[str, str] | None = None) -> dict:
    result = subprocess.run([sys.executable, "-c", _SNAPSHOT + textwrap.dedent(script)], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_hubferry_configures_nothing():
    seen = _run(
        """
        before = snapshot()
        import hubferry
        import hubferry.hub, hubferry.errors, hubferry.testing
        after = snapshot()
        print(json.dumps({"before": before, "after": after}))
        """
    )
    assert seen["after"]["structlog_configured"] is False
    assert seen["after"] == seen["before"]


@pytest.mark.parametrize("own_structlog", [False, True], ids=["stdlib-only", "own-structlog-config"])
def test_publish_from_a_script_leaves_its_logging_as_it_was(registry, alice_token, tmp_path, own_structlog):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 4}')
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(64 * 1024))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBFERRY_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HUBFERRY_HOME=str(tmp_path / "home"), HF_HUB_DISABLE_XET="1")
    structlog_setup = (
        "structlog.configure(processors=[structlog.processors.KeyValueRenderer()], "
        "logger_factory=structlog.PrintLoggerFactory(), cache_logger_on_first_use=False)"
        if own_structlog else ""
    )
    seen = _run(
        f"""
        import sys

        class Mine(logging.Filter):
            def filter(self, record):
                return True

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("MY-APP %(name)s %(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        logging.getLogger().addFilter(Mine())
        logging.getLogger("huggingface_hub").setLevel(logging.INFO)
        {structlog_setup}
        before = snapshot()
        import hubferry
        publication = hubferry.publish({str(folder)!r}, "alice/politeness-{int(own_structlog)}",
                                       endpoint={registry.endpoint!r}, token={alice_token!r})
        after = snapshot()
        print(json.dumps({{"before": before, "after": after, "sha": publication.commit_sha}}))
        """,
        env=env,
    )
    assert len(seen["sha"]) == 40
    assert seen["after"]["structlog_configured"] is own_structlog
    assert seen["after"] == seen["before"]
