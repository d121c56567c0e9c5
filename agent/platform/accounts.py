"""Who a uid is: the OS account name and the names of its groups (for `PolicyBundle.group_of`).

One lookup for the agent (the idle collector and the proxy both ask it).
"""

from __future__ import annotations

import grp
import os
import pwd


def user_and_groups(uid: int) -> tuple[str, tuple[str, ...]]:
    """OS user name and its group names; a uid without an account is its number and no groups."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return str(uid), ()
    names = []
    for gid in os.getgrouplist(entry.pw_name, entry.pw_gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue  # a gid without a group entry: nothing to match a policy group against
    return entry.pw_name, tuple(names)
