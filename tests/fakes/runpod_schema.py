"""The slice of RunPod's GraphQL schema (``https://api.runpod.io/graphql``) that runpod-python 1.12.0 touches.

Written by hand from the queries the client sends (``runpod.api.queries``, ``runpod.api.mutations.pods``)
and the answers documented for them, so graphql-core parses, validates and executes the client's exact
texts the way the real server does: a misspelt field or a value of the wrong type is a validation error,
an env value holding ``"`` a syntax error. Every input field the client can send is declared; output
fields are those the client selects, plus ``runtime.uptimeInSeconds`` and ``machine.podHostId``.

:func:`answer_graphql` runs one request for an account against :class:`fakes.runpod_server.FakeRunPod`.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    build_schema,
    execute_sync,
    parse,
    validate,
)

if TYPE_CHECKING:
    from fakes.runpod_server import Account, FakeRunPod

SDL = '''
"""Fields that answer nothing (``podTerminate``)."""
scalar Void

enum CloudTypeEnum { ALL SECURE COMMUNITY }

enum PodStatus { CREATED RUNNING RESTARTING EXITED PAUSED DEAD TERMINATED }

input EnvironmentVariableInput { key: String! value: String! }

input PodFilter { podId: String! }

input GpuTypeFilter { id: String }

input GpuLowestPriceInput { gpuCount: Int }

input PodFindAndDeployOnDemandInput {
  name: String
  imageName: String
  cloudType: CloudTypeEnum
  startSsh: Boolean
  gpuTypeId: String
  supportPublicIp: Boolean
  gpuCount: Int
  volumeInGb: Int
  minVcpuCount: Int
  minMemoryInGb: Int
  allowedCudaVersions: [String]
  dataCenterId: String
  dockerArgs: String
  countryCode: String
  containerDiskInGb: Int
  ports: String
  volumeMountPath: String
  env: [EnvironmentVariableInput]
  templateId: String
  networkVolumeId: String
  minDownload: Int
  minUpload: Int
}

input DeployCpuPodInput {
  name: String
  imageName: String
  cloudType: CloudTypeEnum
  startSsh: Boolean
  instanceId: String
  dataCenterId: String
  dockerArgs: String
  countryCode: String
  containerDiskInGb: Int
  ports: String
  volumeMountPath: String
  env: [EnvironmentVariableInput]
  templateId: String
  networkVolumeId: String
  minDownload: Int
  minUpload: Int
}

input PodStopInput { podId: String! incrementVersion: Boolean }

input PodResumeInput { podId: String! gpuCount: Int! }

input PodTerminateInput { podId: String! }

type LowestPrice {
  minimumBidPrice: Float
  uninterruptablePrice: Float
}

type GpuType {
  id: String
  displayName: String
  manufacturer: String
  memoryInGb: Int
  cudaCores: Int
  maxGpuCount: Int
  secureCloud: Boolean
  communityCloud: Boolean
  securePrice: Float
  communityPrice: Float
  oneMonthPrice: Float
  threeMonthPrice: Float
  oneWeekPrice: Float
  communitySpotPrice: Float
  secureSpotPrice: Float
  lowestPrice(input: GpuLowestPriceInput): LowestPrice
}

type PodRuntimePorts {
  ip: String
  isIpPublic: Boolean
  privatePort: Int
  publicPort: Int
  type: String
}

type PodRuntime {
  uptimeInSeconds: Int
  ports: [PodRuntimePorts]
}

type PodMachineInfo {
  gpuDisplayName: String
  podHostId: String
}

type Pod {
  id: String!
  containerDiskInGb: Int
  costPerHr: Float
  desiredStatus: PodStatus
  dockerArgs: String
  dockerId: String
  env: [String]
  gpuCount: Int
  imageName: String
  lastStatusChange: String
  machineId: String
  memoryInGb: Float
  name: String
  podType: String
  port: Int
  ports: String
  uptimeSeconds: Int
  vcpuCount: Float
  volumeInGb: Float
  volumeMountPath: String
  runtime: PodRuntime
  machine: PodMachineInfo
}

type NetworkVolume {
  id: String
  name: String
  size: Int
  dataCenterId: String
}

type User {
  id: String
  pubKey: String
  networkVolumes: [NetworkVolume]
  pods: [Pod]
}

type Query {
  pod(input: PodFilter!): Pod
  myself: User
  gpuTypes(input: GpuTypeFilter): [GpuType]
}

type Mutation {
  podFindAndDeployOnDemand(input: PodFindAndDeployOnDemandInput): Pod
  deployCpuPod(input: DeployCpuPodInput!): Pod
  podStop(input: PodStopInput!): Pod
  podResume(input: PodResumeInput!): Pod
  podTerminate(input: PodTerminateInput!): Void
}
'''


@cache
def runpod_schema() -> GraphQLSchema:
    """The schema, built once per process (resolvers are passed per request, never stored on it)."""
    return build_schema(SDL)


class _Root:
    """The root value of one request: Query and Mutation fields (named as in GraphQL), resolved for ``account``."""

    def __init__(self, fake: FakeRunPod, account: Account) -> None:
        self.fake, self.account = fake, account

    def pod(self, _info: Any, **args: Any) -> dict[str, Any] | None:
        pod = self.fake.visible(self.account, args["input"]["podId"])
        return self.fake.pod_json(pod) if pod is not None else None

    def myself(self, _info: Any) -> dict[str, Any]:
        return {"id": self.account.id, "pubKey": self.account.pub_key,
                "networkVolumes": list(self.account.network_volumes),
                "pods": [self.fake.pod_json(p) for p in self.fake.visible_pods(self.account)]}

    def gpuTypes(self, _info: Any, **args: Any) -> list[dict[str, Any]]:
        return [self.fake.gpu_json(o) for o in self.fake.offers((args.get("input") or {}).get("id"))]

    def podFindAndDeployOnDemand(self, _info: Any, **args: Any) -> dict[str, Any]:
        return self.fake.pod_json(self.fake.deploy(self.account, args.get("input") or {}, gpu=True))

    def deployCpuPod(self, _info: Any, **args: Any) -> dict[str, Any]:
        return self.fake.pod_json(self.fake.deploy(self.account, args["input"], gpu=False))

    def podStop(self, _info: Any, **args: Any) -> dict[str, Any]:
        return self.fake.pod_json(self.fake.stop(self.account, args["input"]["podId"]))

    def podResume(self, _info: Any, **args: Any) -> dict[str, Any]:
        spec = args["input"]
        return self.fake.pod_json(self.fake.resume(self.account, spec["podId"], spec["gpuCount"]))

    def podTerminate(self, _info: Any, **args: Any) -> None:
        self.fake.terminate(self.account, args["input"]["podId"])


def answer_graphql(
    fake: FakeRunPod, account: Account, body: Any
) -> tuple[int, dict[str, Any], str | None, tuple[str, ...]]:
    """Run one request body; returns (HTTP status, JSON answer, operation name, root fields).

    Parse and validation failures are HTTP 400 with the errors alone (as Apollo Server answers, codes
    ``GRAPHQL_PARSE_FAILED`` / ``GRAPHQL_VALIDATION_FAILED``); resolver errors are HTTP 200 with
    ``data`` and ``errors``, as RunPod answers a capacity error.
    """
    query = body.get("query") if isinstance(body, dict) else None
    if not isinstance(query, str) or not query.strip():
        message = "GraphQL operations must contain a non-empty `query` or a `persistedQuery` extension."
        return 400, {"errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]}, None, ()
    try:
        document = parse(query)
    except GraphQLError as exc:
        return 400, {"errors": [_error(exc, "GRAPHQL_PARSE_FAILED")]}, None, ()
    operation_name = body.get("operationName")
    name, fields = _names(document, operation_name)
    problems = validate(runpod_schema(), document)
    if problems:
        return 400, {"errors": [_error(e, "GRAPHQL_VALIDATION_FAILED") for e in problems]}, name, fields
    fake.refresh()
    result = execute_sync(runpod_schema(), document, root_value=_Root(fake, account),
                          operation_name=operation_name, variable_values=body.get("variables"))
    answer: dict[str, Any] = {"data": result.data}
    if result.errors:
        answer = {"errors": [_error(e, "INTERNAL_SERVER_ERROR") for e in result.errors], **answer}
    return 200, answer, name, fields


def peek(raw: bytes) -> tuple[str | None, tuple[str, ...]]:
    """The operation name and root fields of a body the fake does not execute (best effort)."""
    try:
        return _names(parse(json.loads(raw)["query"]), None)
    except (ValueError, TypeError, KeyError, GraphQLError):  # not JSON, not a GraphQL request, not GraphQL
        return None, ()


def _names(document: DocumentNode, operation_name: str | None) -> tuple[str | None, tuple[str, ...]]:
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        name = definition.name.value if definition.name is not None else None
        if operation_name is None or name == operation_name:
            selections = definition.selection_set.selections
            return name, tuple(s.name.value for s in selections if isinstance(s, FieldNode))
    return None, ()


def _error(error: GraphQLError, code: str) -> dict[str, Any]:
    formatted: dict[str, Any] = dict(error.formatted)
    formatted["extensions"] = {"code": code, **(error.extensions or {})}
    return formatted
