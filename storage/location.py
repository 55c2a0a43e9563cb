"""Where the store lives: a local folder or an object-store prefix (s3://bucket/prefix), and how the
engines are told to reach it.

Lance datasets take the same code on both; for s3:// they get the endpoint and credentials from the
standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
Plain http is allowed only for a loopback endpoint (a SeaweedFS or MinIO on this machine): anything
else must be https, so credentials never cross a network in clear.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from storage.errors import UserError

REMOTE_SCHEMES = ("s3",)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
AWS_OPTIONS = {  # standard AWS variable -> Lance (object_store) storage option
    "AWS_ENDPOINT_URL": "endpoint",
    "AWS_ACCESS_KEY_ID": "access_key_id",
    "AWS_SECRET_ACCESS_KEY": "secret_access_key",
    "AWS_SESSION_TOKEN": "session_token",
    "AWS_REGION": "region",
}


class StoreLocationError(UserError, ValueError):
    """The store's location cannot be used as given; the message says what to change."""


def is_remote(uri: str) -> bool:
    """True for an object-store URI (s3://...), false for a local path."""
    return urlparse(str(uri)).scheme in REMOTE_SCHEMES


def join(uri: str, *parts: str) -> str:
    """`uri` with `parts` appended by '/', for local paths and object-store URIs alike."""
    return "/".join([str(uri).rstrip("/"), *(part.strip("/") for part in parts)])


def lance_storage_options(uri: str) -> dict[str, str] | None:
    """What Lance needs to open `uri`: None for a local path; the AWS variables for s3://."""
    if not is_remote(uri):
        return None
    options = {option: os.environ[variable] for variable, option in AWS_OPTIONS.items() if os.environ.get(variable)}
    endpoint = options.get("endpoint", "")
    if endpoint.startswith("http://"):
        if urlparse(endpoint).hostname not in LOOPBACK_HOSTS:
            raise StoreLocationError(
                f"AWS_ENDPOINT_URL={endpoint} is plain http to another machine: use https, or an endpoint on "
                "127.0.0.1 (plain http is allowed only on this machine).")
        options["allow_http"] = "true"
    options.setdefault("region", "us-east-1")
    return options


def s3_filesystem(uri: str):
    """An s3fs filesystem for `uri` with the same endpoint, credentials and http rule as Lance gets."""
    import s3fs

    options = lance_storage_options(uri) or {}
    return s3fs.S3FileSystem(key=options.get("access_key_id"), secret=options.get("secret_access_key"),
                             token=options.get("session_token"), endpoint_url=options.get("endpoint"),
                             client_kwargs={"region_name": options["region"]})


def is_missing_dataset(error: Exception) -> bool:
    """True for Lance's "no dataset at this path" (a dataset not written yet)."""
    return isinstance(error, (ValueError, OSError)) and "was not found" in str(error)


def open_lance(uri: str):
    """The Lance dataset at `uri`, or None when none was written there yet; other errors pass on."""
    import lance

    try:
        return lance.dataset(uri, storage_options=lance_storage_options(uri))
    except (ValueError, OSError) as error:
        if is_missing_dataset(error):
            return None
        raise
