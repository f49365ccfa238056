"""Correctly signed sample deliveries, one per forge, shaped like the forge's own payloads.

Used by `meshcd webhook test` (to check a receiver before pointing a forge at it), by the
tests and by the benchmark. `signature_headers` signs any body the way the forge would."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

from webhooks.adapters import FORGES
from webhooks.repo_url import canonical_repo_key
from webhooks.signatures import hmac_sha256_hex

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class SampleDelivery:
    forge: str
    headers: dict[str, str]
    body: bytes


def signature_headers(forge: str, body: bytes, secret: bytes) -> dict[str, str]:
    """The authentication header(s) `forge` would send with `body`."""
    digest = hmac_sha256_hex(secret, body)
    if forge == "github":
        return {"X-Hub-Signature-256": f"sha256={digest}"}
    if forge == "gitlab":
        return {"X-Gitlab-Token": secret.decode("latin-1")}
    if forge == "gitea":
        return {"X-Gitea-Signature": digest}
    if forge == "forgejo":
        # Forgejo sends both spellings, as real Forgejo does.
        return {"X-Forgejo-Signature": digest, "X-Gitea-Signature": digest}
    if forge == "bitbucket":
        return {"X-Hub-Signature": f"sha256={digest}"}
    if forge == "generic":
        return {"X-Meshcd-Signature": f"sha256={digest}"}
    raise ValueError(f"unknown forge {forge!r}; expected one of {', '.join(FORGES)}")


def event_headers(forge: str, delivery_id: str, *, tag: bool = False) -> dict[str, str]:
    """Event and delivery headers of a push."""
    if forge == "github":
        return {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery_id}
    if forge == "gitlab":
        return {
            "X-Gitlab-Event": "Tag Push Hook" if tag else "Push Hook",
            "X-Gitlab-Event-UUID": delivery_id,
        }
    if forge == "gitea":
        return {"X-Gitea-Event": "push", "X-Gitea-Delivery": delivery_id}
    if forge == "forgejo":
        return {
            "X-Forgejo-Event": "push",
            "X-Forgejo-Delivery": delivery_id,
            "X-Gitea-Event": "push",
            "X-Gitea-Delivery": delivery_id,
        }
    if forge == "bitbucket":
        return {"X-Event-Key": "repo:push", "X-Request-UUID": delivery_id}
    if forge == "generic":
        return {"X-Meshcd-Delivery": delivery_id}
    raise ValueError(f"unknown forge {forge!r}; expected one of {', '.join(FORGES)}")


def _url_forms(repo_url: str) -> tuple[str, str, str]:
    """(https clone URL, scp-like ssh URL, web URL) for a repository URL."""
    key = canonical_repo_key(repo_url, fold_path_case=False)
    if key.startswith("file:"):
        return repo_url, repo_url, repo_url
    host, _, path = key.partition("/")
    return f"https://{host}/{path}.git", f"git@{host}:{path}.git", f"https://{host}/{path}"


def _sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


def push_payload(
    forge: str, *, repo_url: str, ref: str, before: str, after: str, pusher: str = "meshcd-test"
) -> dict[str, object]:
    """A push payload for `forge`, with the fields the forge documents (trimmed)."""
    clone, ssh, web = _url_forms(repo_url)
    full_name = web.split("/", 3)[-1] if web.startswith("https://") else "local/repo"
    name = full_name.rsplit("/", 1)[-1]
    if forge == "github":
        return {
            "ref": ref,
            "before": before,
            "after": after,
            "created": before == "0" * 40,
            "deleted": after == "0" * 40,
            "forced": False,
            "compare": f"{web}/compare",
            "commits": [],
            "head_commit": None,
            "repository": {
                "name": name,
                "full_name": full_name,
                "html_url": web,
                "clone_url": clone,
                "ssh_url": ssh,
                "private": True,
            },
            "pusher": {"name": pusher, "email": f"{pusher}@example.com"},
            "sender": {"login": pusher},
        }
    if forge == "gitlab":
        return {
            "object_kind": "tag_push" if ref.startswith("refs/tags/") else "push",
            "event_name": "tag_push" if ref.startswith("refs/tags/") else "push",
            "before": before,
            "after": after,
            "ref": ref,
            "checkout_sha": None if after == "0" * 40 else after,
            "user_name": pusher,
            "user_username": pusher,
            "project": {
                "name": name,
                "path_with_namespace": full_name,
                "web_url": web,
                "git_ssh_url": ssh,
                "git_http_url": clone,
                "default_branch": "main",
            },
            "repository": {
                "name": name,
                "url": ssh,
                "homepage": web,
                "git_http_url": clone,
                "git_ssh_url": ssh,
            },
            "commits": [],
            "total_commits_count": 0,
        }
    if forge in ("gitea", "forgejo"):
        return {
            "ref": ref,
            "before": before,
            "after": after,
            "compare_url": f"{web}/compare",
            "commits": [],
            "total_commits": 0,
            "head_commit": None,
            "repository": {
                "name": name,
                "full_name": full_name,
                "html_url": web,
                "clone_url": clone,
                "ssh_url": ssh,
                "private": True,
            },
            "pusher": {"login": pusher, "username": pusher},
            "sender": {"login": pusher, "username": pusher},
        }
    if forge == "bitbucket":
        kind = "tag" if ref.startswith("refs/tags/") else "branch"
        short = ref.split("/", 2)[-1]

        def state(sha: str) -> dict[str, object] | None:
            if sha == "0" * len(sha):
                return None
            return {"type": kind, "name": short, "target": {"type": "commit", "hash": sha}}

        return {
            "actor": {"type": "user", "display_name": pusher, "nickname": pusher},
            "repository": {
                "type": "repository",
                "full_name": full_name,
                "name": name,
                "scm": "git",
                "is_private": True,
                "links": {"html": {"href": web}},
            },
            "push": {
                "changes": [
                    {
                        "old": state(before),
                        "new": state(after),
                        "created": before == "0" * 40,
                        "closed": after == "0" * 40,
                        "forced": False,
                        "truncated": False,
                        "commits": [],
                    }
                ]
            },
        }
    if forge == "generic":
        return {"repo": repo_url, "ref": ref, "before": before, "after": after, "pusher": pusher}
    raise ValueError(f"unknown forge {forge!r}; expected one of {', '.join(FORGES)}")


def build_sample(
    forge: str,
    secret: bytes,
    *,
    repo_url: str,
    branch: str = "main",
    after: str | None = None,
    before: str | None = None,
    delivery_id: str | None = None,
    ref: str | None = None,
) -> SampleDelivery:
    """A push of `branch` (or of `ref`) in `repo_url`, signed with `secret`."""
    delivery = delivery_id or str(uuid.uuid4())
    full_ref = ref or f"refs/heads/{branch.removeprefix('refs/heads/')}"
    after = after or _sha(f"after:{delivery}")
    before = before or _sha(f"before:{delivery}")
    payload = push_payload(forge, repo_url=repo_url, ref=full_ref, before=before, after=after)
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": JSON,
        **event_headers(forge, delivery, tag=full_ref.startswith("refs/tags/")),
    }
    headers.update(signature_headers(forge, body, secret))
    return SampleDelivery(forge=forge, headers=headers, body=body)
