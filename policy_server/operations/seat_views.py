"""`GET /install/seat.sh` and `GET /install/kalkan-agent.deb`: what a lab PC needs to install
the agent, from the school server (no internet; policy_server/operations/seat.py).  Public:
neither holds a secret (the enrolment code is only in the command the person runs)."""

from __future__ import annotations

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
    from policy_server.certs.served import served_fingerprint, served_pubkey_pin

    settings = request.app.state.settings
    package = _package(request)
    digest = await run_in_threadpool(seat.sha256_file, package)
    url = settings.public_url or str(request.base_url).rstrip("/")
    # the certificate this process serves (after `tls activate`, until the restart: the old one)
    text = seat.seat_script(server_url=url, pin=served_pubkey_pin(settings),
                            fingerprint=served_fingerprint(settings), package_sha256=digest)
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
def server_certificate(request: Request) -> Response:
    """The server's own certificate: apt on a seat trusts it for this host only (fetched pinned)."""
    from policy_server.certs.served import served_pem

    settings = request.app.state.settings
    pem = served_pem(settings) if getattr(settings, "tls", False) else None
    if pem is None:
        raise NotFound("this server runs without TLS: it has no certificate for the seats",
                       code="install.no_certificate")
    return Response(pem, media_type="application/x-pem-file")


@router.get("/server.next.crt", dependencies=[Depends(scope.public)])
def next_server_certificate(request: Request) -> FileResponse:
    """The next certificate of a rotation (`kalkan-server tls rotate`): an agent that heard its
    fingerprint fetches it over its pinned channel, checks it, and adds it to apt's trust for
    this host, so upgrades keep working after `tls activate` (agent/server_certs.py)."""
    from policy_server.certs.rotation import CertFiles, next_fingerprint

    files = CertFiles.of(request.app.state.settings)
    if next_fingerprint(files) is None:
        raise NotFound("no certificate rotation is under way: there is no next certificate",
                       code="install.no_next_certificate")
    return FileResponse(files.next[0], media_type="application/x-pem-file")


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
