"""The JSON bodies the registry accepts, as pydantic models: one place that says which fields and types
each route takes, so a malformed body is a 400 naming the field instead of a crash deep in a route.

Unknown fields are ignored (huggingface_hub sends more than the registry uses); sizes are strict
non-negative integers, so ``true``, ``"12"`` and ``1e400`` are refused.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Size = Annotated[int, Field(strict=True, ge=0)]
#: Short free-text fields (names, summaries); bodies as a whole are bounded by ``max_json_bytes``.
Name = Annotated[str, Field(max_length=256)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CreateRepo(Body):
    name: Name
    organization: Name | None = None
    type: Name | None = None
    visibility: Name | None = None
    private: bool | None = None


class DeleteRepo(Body):
    name: Name
    organization: Name | None = None
    type: Name | None = None


class PreuploadFile(Body):
    path: str
    #: base64 of the first 512 bytes (base64 of 512 bytes is 684 characters).
    sample: Annotated[str, Field(max_length=4096)] = ""
    size: Size = 0


class Preupload(Body):
    files: list[PreuploadFile]
    gitIgnore: str | None = None  # noqa: N815 - the Hub's field name


class PathsInfo(Body):
    paths: list[str]
    expand: bool = False


class StartingPoint(Body):
    startingPoint: Name | None = None  # noqa: N815 - the Hub's field name


class RepoSettings(Body):
    """``update_repo_settings``: visibility (``private`` is the older spelling); gating is not supported."""

    visibility: Literal["public", "private"] | None = None
    private: bool | None = None


class CreateTag(Body):
    tag: Name
    message: str | None = None


class LfsObject(Body):
    oid: Annotated[str, Field(max_length=128)]
    size: Size


class LfsBatch(Body):
    operation: Literal["upload", "download"]
    objects: list[LfsObject]
    transfers: list[str] | None = None
    hash_algo: str | None = None


class LfsVerify(Body):
    oid: Annotated[str, Field(max_length=128)]
    size: Size


class Part(Body):
    partNumber: Annotated[int, Field(strict=True, ge=1)]  # noqa: N815 - the LFS protocol's field name
    etag: Annotated[str, Field(max_length=256)]


class CompleteMultipart(Body):
    oid: Annotated[str, Field(max_length=128)]
    parts: list[Part]


class ValidateYaml(Body):
    content: str
    repoType: str | None = None  # noqa: N815 - the Hub's field name


# -- NDJSON commit lines ----------------------------------------------------------------------------


class CommitHeader(Body):
    summary: str = ""
    description: str = ""
    parentCommit: Annotated[str, Field(max_length=64)] | None = None  # noqa: N815 - the Hub's field name


class CommitFile(Body):
    path: str
    content: str = ""
    encoding: Literal["base64", "utf-8"] = "base64"


class CommitLfsFile(Body):
    path: str
    algo: Literal["sha256"] = "sha256"
    oid: Annotated[str, Field(max_length=128)]
    size: Size | None = None


class CommitDelete(Body):
    path: str


class CommitLine(Body):
    key: Literal["header", "file", "lfsFile", "deletedFile", "deletedFolder"]
    value: dict[str, object]


#: The model of each commit line's ``value``, by ``key``.
COMMIT_VALUES: dict[str, type[Body]] = {
    "header": CommitHeader,
    "file": CommitFile,
    "lfsFile": CommitLfsFile,
    "deletedFile": CommitDelete,
    "deletedFolder": CommitDelete,
}
