"""agent.platform.accounts: a uid's account name and groups, from the real passwd/group files."""

from __future__ import annotations

import grp
import os
import pwd

from agent.platform.accounts import user_and_groups


def test_the_current_user_has_its_name_and_primary_group() -> None:
    uid = os.getuid()
    entry = pwd.getpwuid(uid)
    name, groups = user_and_groups(uid)
    assert name == entry.pw_name
    assert grp.getgrgid(entry.pw_gid).gr_name in groups


def test_a_uid_without_an_account_is_its_number_and_no_groups() -> None:
    taken = {entry.pw_uid for entry in pwd.getpwall()}
    free = next(uid for uid in range(61_000, 65_000) if uid not in taken)
    assert user_and_groups(free) == (str(free), ())
