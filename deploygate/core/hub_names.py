"""Names on the Hugging Face Hub: repo ids and tags, checked before any request is made.

Pure: the rules the Hub applies to a name, as ConfigErrors that echo the bad value.
"""

from __future__ import annotations

import re

from deploygate.core.errors import ConfigError

# the Hub's own limit on a repo id is 96 characters; each part must start and end alphanumeric
_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_TAG = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._/-]*[A-Za-z0-9])?$")
_MAX_REPO_ID = 96
_MAX_TAG = 128
# what looks like a Hub model id (a base model to download, a card's base_model), not a local path
_HUB_LIKE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def hub_like(name: str | None) -> bool:
    """`name` reads as a Hub model id (`owner/name` or a legacy one-part id), not as a path."""
    return bool(name) and bool(_HUB_LIKE.match(str(name))) and ".." not in str(name)


def validate_repo_id(repo_id: str, *, allow_canonical: bool = False) -> str:
    """`owner/name`, alphanumerics plus `-_.`, no `--` or `..`, at most 96 characters; raises ConfigError.

    `allow_canonical` also accepts the Hub's legacy one-part ids (`gpt2`), which can be read (a base
    model) but never pushed to."""
    value = repo_id if isinstance(repo_id, str) else repr(repo_id)
    parts = value.split("/")
    problem = None
    if len(parts) != 2 and not (allow_canonical and len(parts) == 1):
        problem = "must be 'owner/name'"
    elif len(value) > _MAX_REPO_ID:
        problem = f"is longer than {_MAX_REPO_ID} characters"
    elif "--" in value or ".." in value:
        problem = "cannot contain '--' or '..'"
    elif not all(_REPO_PART.match(p) for p in parts):
        problem = "may only use letters, digits, '-', '_' and '.', each part starting and ending with a letter or digit"
    elif value.endswith(".git"):
        problem = "cannot end with '.git'"
    if problem:
        raise ConfigError(f"Hugging Face repo id {value!r} {problem}.", hint="Example: 'my-user/my-model'.")
    return value


def validate_hf_model_id(repo_id: str) -> str:
    """`validate_repo_id` for the `hf-model-id` setting: the error names the input."""
    try:
        return validate_repo_id(repo_id)
    except ConfigError as exc:
        raise ConfigError(f"hf-model-id: {exc.message}", hint=exc.hint) from None


def validate_tag(tag: str) -> str:
    """A git tag name the Hub accepts: letters, digits, `._-/`, no `..`; raises ConfigError."""
    if (
        not isinstance(tag, str)
        or len(tag) > _MAX_TAG
        or not _TAG.match(tag)
        or ".." in tag
        or "//" in tag
        or tag.endswith(".lock")
    ):
        raise ConfigError(
            f"Hub tag {tag!r} is not a valid tag name.",
            hint="Use letters, digits, '.', '_', '-' (e.g. 'v3' or 'deploygate-v3').",
        )
    return tag
