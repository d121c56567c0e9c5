"""Rooms, seat layout, enrolment codes from a page, retiring and re-enrolling a seat."""

from __future__ import annotations

import re

from sqlalchemy import select

from policy_server import protocol
from policy_server.agents.service import enroll
from policy_server.db.models import AuditRecord, Room, Workstation
from tests.web.conftest import csrf_of, login


def test_room_layout_code_enrol_retire(client, school):
    login(client, school.person("admin"))
    page = client.get("/rooms?lang=en")
    token = csrf_of(page.text)
    bad = client.post("/rooms", data={"csrf_token": token, "name": "", "rows": "40", "columns": "2"})
    assert bad.status_code == 422 and 'href="#f-name"' in bad.text and 'href="#f-rows"' in bad.text
    made = client.post(
        "/rooms",
        data={"csrf_token": token, "name": "Lab 2", "rows": "2", "columns": "3"},
        follow_redirects=False,
    )
    assert made.status_code == 303
    room_url = made.headers["location"].split("?")[0]
    room_id = int(room_url.rsplit("/", 1)[1])
    room = client.get(room_url + "?lang=en")
    assert "lab2-01" in room.text and "lab2-06" in room.text
    # rename the seats; a wrong count is refused with the reason
    wrong = client.post(
        f"{room_url}/layout", data={"csrf_token": token, "rows": "2", "columns": "3", "seat_names": "a b c"}
    )
    assert wrong.status_code == 422 and "has 6 seats but 3 names" in wrong.text
    ok = client.post(
        f"{room_url}/layout",
        data={"csrf_token": token, "rows": "2", "columns": "3", "seat_names": "pc1 pc2 pc3 pc4 pc5 pc6"},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    # a code for two seats: shown once with the exact commands for the free seats
    slip = client.post(f"{room_url}/codes?lang=en", data={"csrf_token": token, "uses": "2", "expires": "1d"})
    assert slip.status_code == 200
    code = re.search(r'id="enrolment-code">([A-Z0-9-]+)<', slip.text).group(1)
    assert f"sudo kalkan-agent enroll --server http://127.0.0.1 --code {code} --seat pc1" in slip.text
    assert "--seat pc2" in slip.text and "--seat pc3" not in slip.text
    refused = client.post(
        f"{room_url}/codes?lang=en", data={"csrf_token": token, "uses": "0", "expires": "1d"}
    )
    assert refused.status_code == 422 and "between 1 and 10000" in refused.text
    with school.session() as db:
        answer = enroll(
            db,
            protocol.EnrollRequest(code=code, hostname="pc-one", seat="pc1", os="Linux", agent_version="1"),
        )
        db.commit()
        agent_id = answer.agent_id
    room = client.get(room_url)
    assert "pc-one" in room.text
    # re-enrol: the old token is revoked, a one-use code with --force for the same seat
    again = client.post(f"/seats/{agent_id}/reenrol?lang=en", data={"csrf_token": token})
    assert "--seat pc1 --force" in again.text
    with school.session() as db:
        ws = db.get(Workstation, agent_id)
        assert ws.token_revoked  # kept, not deleted
        assert db.scalar(select(Room).where(Room.id == room_id)).name == "Lab 2"
        actions = set(db.scalars(select(AuditRecord.action)))
        wanted = {"room.create", "room.layout", "enrollment_code.create", "agent.revoke", "seat.retire"}
        assert wanted <= actions
    room = client.get(room_url + "?lang=en")
    assert "Retired workstations" in room.text and "pc-one" in room.text


def test_teacher_cannot_make_codes(client, school):
    login(client, school.person("teacher"))
    assert client.get("/rooms").status_code == 403
    assert client.post("/rooms/1/codes", data={"csrf_token": "x", "uses": "1"}).status_code == 403
