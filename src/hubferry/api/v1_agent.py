"""``/api/v1/agent/jobs/{id}/...``: the callbacks of a pod's agent (docs/pod-agent.md).

Authenticated by the job's own callback token (``Authorization: Bearer hfj_...``), which opens that
job's callbacks and nothing else; a wrong token and an unknown job both answer 401.
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from hubferry.api.errors import ApiError, from_error
from hubferry.domain.jobs import Job
from hubferry.errors import HubferryError
from hubferry.services import pod_agent
from hubferry.services.context import Context

_JOB_ID = Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")


class AgentReport(BaseModel):
    """One report of the agent (bounded: lines are also cut on arrival)."""

    model_config = ConfigDict(extra="ignore")

    seq: int = Field(ge=0, le=2**53)
    phase: Literal["starting", "training", "trained", "publishing", "published", "failed"]
    lines: list[Annotated[str, Field(max_length=64 * 1024)]] = Field(default_factory=list,
                                                                    max_length=pod_agent.MAX_LINES)
    exit_code: int | None = Field(None, ge=-255, le=255)
    message: str = Field("", max_length=8000)
    stage: Literal["training", "publishing"] | None = None
    result: dict[str, Any] | None = None


class AgentAction(BaseModel):
    action: Literal["continue", "publish", "cancel", "exit"]


def agent_router(ctx: Context) -> APIRouter:
    router = APIRouter(prefix="/api/v1/agent/jobs/{job_id}", tags=["agent"])

    def job(job_id: Annotated[str, _JOB_ID], authorization: Annotated[str, Header()] = "") -> Job:
        scheme, _, token = authorization.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token:
                raise pod_agent.Unauthorized(job_id)
            return pod_agent.authenticate(ctx, job_id, token.strip())
        except pod_agent.Unauthorized:
            raise ApiError(401, "this callback token does not open this job", category="authentication",
                           hint="the agent sends HUBFERRY_JOB_TOKEN from its pod's environment") from None

    Caller = Annotated[Job, Depends(job)]

    async def run(fn: Any, *args: Any) -> Any:
        try:
            return await run_in_threadpool(fn, *args)
        except HubferryError as exc:
            raise from_error(exc) from None

    @router.get("/spec", summary="What the pod trains")
    async def spec(caller: Caller) -> dict[str, Any]:
        return dict(await run(pod_agent.spec, ctx, caller))

    @router.post("/report", summary="Progress, log lines and results of the pod")
    async def report(caller: Caller, body: AgentReport) -> AgentAction:
        action = await run(pod_agent.report, ctx, caller, pod_agent.Report(**body.model_dump()))
        return AgentAction(action=action)

    @router.post("/publish-grant", summary="The Hub token and target, read when the pod publishes")
    async def grant(caller: Caller) -> dict[str, Any]:
        return dict(await run(pod_agent.grant, ctx, caller))

    return router
