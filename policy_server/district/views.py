"""The district server's API for schools: enrol with a code, send a signed week.

Both are `scope.public` at the route level: the code (enrolment) and the school's Ed25519
signature (weeks) are the credentials, checked in the service.  On a school-level server
they answer 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.db.session import get_db
from policy_server.district import service
from policy_server.errors import NotFound

router = APIRouter(prefix="/api/v1/district", tags=["district"])


class EnrollBody(BaseModel):
    code: str = Field(min_length=4, max_length=32)
    public_key: str = Field(min_length=40, max_length=2000)


class WeekBody(BaseModel):
    school_id: str = Field(max_length=36)
    period: str = Field(max_length=32)
    aggregates: dict
    signature: str = Field(max_length=200)


def _district_only(request: Request) -> None:
    if getattr(request.app.state, "level", "school") != "district":
        raise NotFound("this server is a school server, not a district server", code="district.not_here")


@router.post("/enroll", dependencies=[Depends(scope.public), Depends(_district_only)])
def enroll(body: EnrollBody, db: Session = Depends(get_db)) -> dict:
    school = service.enroll(db, code=body.code, public_key=body.public_key)
    db.commit()
    return {"school_id": school.id, "name": school.name}


@router.post("/weeks", dependencies=[Depends(scope.public), Depends(_district_only)])
def receive_week(body: WeekBody, db: Session = Depends(get_db)) -> dict:
    status = service.receive(
        db, school_id=body.school_id, period=body.period, aggregates=body.aggregates, signature=body.signature
    )
    db.commit()
    return {"status": status}
