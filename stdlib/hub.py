"""`push = hub("org/name", private = true)`: an export uploaded to the Hugging Face Hub.

In:  the export's `push` call (repo id, private) and its built folder.
Out: `problem()` — why a push cannot happen here (HF_HUB_OFFLINE, no token), which the
     runtime asks before the run starts so no training is wasted; `upload()` — the repo
     created if needed (huggingface_hub HfApi.create_repo) and the folder uploaded in one
     commit (HfApi.upload_folder); the commit's url and id for the ledger.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ftlang.lang.diagnostics import Diagnostic
from ftlang.stdlib.spec import REQUIRED, Attr, BlockView, Call, Signature, StepError, error

PUSHES = {
    "hub": Signature("hub", (
        Attr("repo", "str", REQUIRED, "the Hugging Face model repository, \"org/name\""),
        Attr("private", "bool", False, "create the repository private (an existing repository keeps "
             "its visibility)"),
    ), "Upload the exported folder to the Hugging Face Hub in one commit (needs a token: `hf auth "
       "login` or HF_TOKEN; checked before the run starts).", positional=("repo",)),
}

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
TRUE = {"1", "ON", "YES", "TRUE"}  # how huggingface_hub reads its boolean variables


def rules(b: BlockView) -> list[Diagnostic]:
    push = b.params.get("push")
    if not isinstance(push, Call):
        return []
    repo = push.get("repo")
    if isinstance(repo, str) and (not REPO_ID.match(repo) or "--" in repo or ".." in repo):
        return [error("FT0300", f"{repo!r} is not a Hugging Face repository id", b.at("push"),
                      "expected \"org/name\"", help="write push = hub(\"your-name/model-name\")")]
    return []


def problem() -> tuple[str, str] | None:
    """(message, hint) when a push cannot work in this environment, else None. Reads the
    environment and the token file only: no network."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in TRUE:
        return ("cannot push to the Hugging Face Hub: HF_HUB_OFFLINE is set",
                "unset HF_HUB_OFFLINE to push, or remove `push` from the export")
    from huggingface_hub import get_token

    if not get_token():
        return ("cannot push to the Hugging Face Hub: no token",
                "log in with `hf auth login` or set HF_TOKEN, or remove `push` from the export")
    return None


def upload(folder: Path, push: Call, *, message: str) -> dict[str, Any]:
    """Creates the repo if needed and uploads `folder` as one commit; StepError on failure."""
    found = problem()
    if found is not None:  # the run-start check passed, but the environment may have changed
        raise StepError(found[0], hint=found[1])
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    repo, private = str(push["repo"]), bool(push["private"])
    api = HfApi()
    try:
        api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model",
                                 commit_message=message, ignore_patterns=[".ftlang-export"])
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = {401: "the token is not valid: `hf auth login` again",
                403: f"the token cannot write to {repo}: use a write token, or a repo you own"}.get(
            status, "check the repo id and your network, then run again: the export is rebuilt from the cache")
        raise StepError(f"push to {repo} failed: {str(exc).splitlines()[0]}", hint=hint) from exc
    return {"repo": repo, "private": private, "commit": getattr(info, "oid", None),
            "url": getattr(info, "commit_url", None) or str(info)}
