"""Schemathesis against ``/openapi.json``: whatever a signed-in (non-admin) user sends to ``/api/v1``, the
server answers with no 5xx. Bounded: a few examples per operation, the whole file well under a minute.

Operations are driven one by one through Hypothesis here, not through schemathesis' pytest plugin, whose
lazy fixture loading does not work with this pytest.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from fakes.api_v1 import api_context, stored_job
from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app

#: Examples per operation (about 20 operations) and generation mode.
EXAMPLES = 12


def test_no_request_makes_the_api_fail_with_a_5xx(tmp_path):
    ctx = api_context(tmp_path, dataset_max_bytes=200_000, fetch_allow_hosts=())
    app = create_app(ctx, run_consumer=False)
    # Not an administrator: fuzzed bodies must never become commands run on this machine.
    auth = {"Authorization": f"Bearer {TestUsers(ctx.jobs.engine).token('fuzzer')}"}
    own_job = stored_job(ctx, "fuzzer").id
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(
        path_regex=r"^/api/v1/(jobs|datasets|naming|notifications)")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        for mode in GenerationMode:  # valid-looking requests, and requests that break the schema

            @given(case=operation.as_strategy(mode), own=st.booleans())
            @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate], database=None,
                      suppress_health_check=list(HealthCheck))
            def fuzz(case, own: bool) -> None:
                if own and "job_id" in (case.path_parameters or {}):  # now and then, a job that exists
                    case.path_parameters["job_id"] = own_job
                response = case.call(headers=auth)
                case.validate_response(response, checks=[not_a_server_error])

            try:
                fuzz()
            except Unsatisfiable:  # an operation with nothing to get wrong (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, operation.label
