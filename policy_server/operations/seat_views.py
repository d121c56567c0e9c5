"""`GET /install/seat.sh` and `GET /install/kalkan-agent.deb`: what a lab PC needs to install
the agent, from the school server (no internet; policy_server/operations/seat.py).  Public:
neither holds a secret (the enrolment code is only in the command the person runs)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from policy_server import scope
from policy_server.errors import NotFound
from policy_server.operations import seat

router = APIRouter(prefix="/install", tags=["operations"])


def _package(request: Request):
    package = seat.newest_package(request.app.state.settings)
    if package is None:
        raise NotFound("no agent package on this server yet: copy kalkan-agent_<version>_amd64.deb into "
                       f"{seat.seat_package_dir(request.app.state.settings)} (docs/operations.md)",
                       code="install.no_package")
    return package


@router.get("/kalkan-agent.deb", dependencies=[Depends(scope.public)])
def agent_package(request: Request) -> FileResponse:
    package = _package(request)
    return FileResponse(package, media_type="application/vnd.debian.binary-package", filename=package.name)


@router.get("/seat.sh", dependencies=[Depends(scope.public)])
async def seat_script(request: Request) -> Response:
    from policy_server.tls import cert_fingerprint

    settings = request.app.state.settings
    package = _package(request)
    digest = await run_in_threadpool(seat.sha256_file, package)
    url = settings.public_url or str(request.base_url).rstrip("/")
    text = seat.seat_script(server_url=url, pin=seat.pubkey_pin(settings.cert_path),
                            fingerprint=cert_fingerprint(settings.cert_path), package_sha256=digest)
    return Response(text, media_type="text/x-shellscript; charset=utf-8",
                    headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------ the seats' apt repository
# (policy_server/operations/apt_repo.py): public, like the package itself; the index is signed
# with the server's key, which the seat command installs (pinned) as the only keyring for it.


@router.get("/kalkan-archive.gpg", dependencies=[Depends(scope.public)])
async def apt_keyring(request: Request) -> Response:
    from policy_server.operations import apt_repo

    data = await run_in_threadpool(apt_repo.public_keyring, request.app.state.settings)
    return Response(data, media_type="application/pgp-keys")


@router.get("/server.crt", dependencies=[Depends(scope.public)])
def server_certificate(request: Request) -> FileResponse:
    """The server's own certificate: apt on a seat trusts it for this host only (fetched pinned)."""
    settings = request.app.state.settings
    if not getattr(settings, "tls", False) or not Path(settings.cert_path).is_file():
        raise NotFound("this server runs without TLS: it has no certificate for the seats",
                       code="install.no_certificate")
    return FileResponse(settings.cert_path, media_type="application/x-pem-file")


@router.get("/apt/{name:path}", dependencies=[Depends(scope.public)])
async def apt_file(request: Request, name: str) -> Response:
    from policy_server.operations import apt_repo

    settings = request.app.state.settings
    name = name.removeprefix("./")  # apt asks a flat repository ("deb URI ./") for ./InRelease, ./Packages
    if name in apt_repo.INDEX_FILES:
        folder = await run_in_threadpool(apt_repo.ensure_repo, settings)
        return FileResponse(folder / name, headers={"Cache-Control": "no-store"})
    for deb in apt_repo.packages(settings):
        if deb.name == name:
            return FileResponse(deb, media_type="application/vnd.debian.binary-package")
    raise NotFound(f"the seats' apt repository has no file {name!r}", code="install.no_package")
