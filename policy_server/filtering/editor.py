"""The policy editor's service: checked input, proposed changes, their difference, saving
through `amend_policy`, and rolling back to an earlier version.

Every change is a `Proposal`: what it does (a pure function of the bundle), the sentence for
the policy history and the clause it serves.  `preview` shows the difference before saving;
`apply` saves it (one new version, audited, pushed to every seat).  Bad input raises
`InvalidInput` naming the line and the fix, before anything is stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.audit import audit
from policy_server.db.models import PolicyVersion
from policy_server.errors import InvalidInput, NotFound
from policy_server.policies.service import amend_policy, current_bundle
from policy_server.web.i18n import N_

LIST_NAMES = {  # form name → (what a person reads, clause)
    "allow_list": ("school allow-list", "001 §2.6"),
    "block_list": ("school block-list", "001 §2.6"),
    "passthrough_hosts": ("passed-through hosts (banks, ISUO: never intercepted)", "001 §2.15"),
    "group_allow_list": ("group allow-list", "001 §2.6"),
    "group_block_list": ("group block-list", "001 §2.6"),
}
MODES = ("open", "allow_list", "no_internet")
KINDS = ("student", "teacher", "staff", "admin")
DOWNLOAD_KINDS = ("executable", "installer", "script", "archive", "media", "torrent")
DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9-]{1,63}$")
_REGEX_CHARS = set("^$*+?()[]{}|\\")
MAX_ENTRIES = 20000
MAX_ERRORS_SHOWN = 8

# Problem code → English message id (the pages say them in ky/ru/en: filtering/locale).
# `%(where)s` is the list's name and the line ("school block-list, line 7").
PROBLEMS = {
    "entry.empty": N_("%(where)s: empty; write a domain like example.kg"),
    "entry.adguard": N_("%(where)s: %(text)s is an AdGuard rule; write the plain domain (%(plain)s) or "
                        "upload the whole file as an AdGuard list"),
    "entry.regex": N_("%(where)s: %(text)s looks like a regular expression; Kalkan lists take domains and "
                      "URL prefixes only: write example.kg or example.kg/path"),
    "entry.space": N_("%(where)s: %(text)s has a space in it; write one domain a line"),
    "entry.not_domain": N_("%(where)s: %(text)s is not a domain or URL; write it as example.kg or "
                           "example.kg/path"),
    "upload.empty": N_("%(where)s: the file is empty; choose the list file again (one domain a line)"),
    "upload.utf16": N_("%(where)s: the file is UTF-16 (Windows Notepad \"Unicode\"); open it in Notepad, "
                       "choose Save As, Encoding: UTF-8, and upload it again"),
    "upload.not_utf8": N_("%(where)s: not UTF-8 text; save the file as UTF-8 and upload it again"),
    "upload.no_entries": N_("%(where)s: no entries in the file (only comments); write one domain a line"),
    "upload.adguard_plain": N_("%(where)s: %(text)s is a plain line in an AdGuard list; write it as "
                               "||%(plain)s^ or upload plain and AdGuard lists separately"),
    "category.unknown": N_("%(where)s: unknown category %(text)s; use one of: %(known)s"),
    "site_categories.format": N_("%(where)s: %(text)s needs a site and its categories, e.g. "
                                 "example.kg games,social"),
    "bands.format": N_("%(where)s: %(text)s; write e.g. mon-fri 08:00-15:00 (days mon tue wed thu fri sat "
                       "sun)"),
    "holidays.format": N_("%(where)s: %(text)s is not a date; write YYYY-MM-DD, e.g. 2025-03-21"),
    "list.too_long": N_("%(where)s: %(text)s entries; at most 20000 fit in the policy — put long lists "
                        "into the category lists instead"),
}
NOTHING_SAVED = N_("Nothing was saved.")
LABELS = {  # what a person reads for `what`
    "entry": N_("entry"), "upload": N_("the uploaded file"), "category": N_("category"),
    "site categories": N_("site categories"), "holidays": N_("holidays"), "time bands": N_("time bands"),
    "school allow-list": N_("school allow-list"), "school block-list": N_("school block-list"),
    "passed-through hosts": N_("passed-through hosts"), "group allow-list": N_("group allow-list"),
    "group block-list": N_("group block-list"),
}


@dataclass(frozen=True)
class Problem:
    code: str
    what: str
    line: int | None = None
    params: tuple[tuple[str, str], ...] = ()

    def text(self, translate=None) -> str:
        tr = translate or (lambda m, **p: m % p if p else m)
        where = tr(LABELS.get(self.what, self.what))
        if self.line:
            where += ", " + tr(N_("line %(line)s"), line=self.line)
        return tr(PROBLEMS[self.code], where=where, **dict(self.params))


class ListInputError(InvalidInput):
    """Bad input, every problem named (with its line); nothing was stored."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = [p.text() for p in problems[:MAX_ERRORS_SHOWN]]
        more = f" … and {len(problems) - MAX_ERRORS_SHOWN} more" if len(problems) > MAX_ERRORS_SHOWN else ""
        super().__init__("; ".join(shown) + more + ". Nothing was saved.", code="filtering.bad_input")

    def texts(self, translate) -> list[str]:
        return [p.text(translate) for p in self.problems[:MAX_ERRORS_SHOWN]]

    def in_language(self, language: str) -> str:
        """Every problem in `language` (the API's answer; the pages list them one by one)."""
        if language == "en":
            return self.message
        from policy_server.web.i18n import translate

        def tr(message: str, **params: object) -> str:
            return translate(language, message, **params)

        return "; ".join(self.texts(tr)) + ". " + tr(NOTHING_SAVED)


def _problem(code: str, what: str, line: int | None = None, **params: str) -> ListInputError:
    return ListInputError([Problem(code, what, line, tuple((k, str(v)) for k, v in params.items()))])


def parse_entry(text: str, *, what: str = "entry", line: int | None = None) -> str:
    """A domain (`example.kg`, `*.example.kg`) or URL prefix (`example.kg/path`) as the
    lists keep it; InvalidInput naming the line and the fix otherwise."""
    from filters.canonical import canonicalize, split_canonical

    raw = text.strip()
    if raw.startswith("*."):
        raw = raw[2:]
    shown = repr(text.strip())
    if not raw:
        raise _problem("entry.empty", what, line)
    if raw.startswith("||") or raw.endswith("^"):
        raise _problem("entry.adguard", what, line, text=shown, plain=raw.strip("|^"))
    if _REGEX_CHARS & set(raw.split("/", 1)[0].split("?", 1)[0] if "://" not in raw else raw):
        raise _problem("entry.regex", what, line, text=shown)
    if any(c.isspace() for c in raw):
        raise _problem("entry.space", what, line, text=shown)
    try:
        host, path, query = split_canonical(canonicalize(raw))
    except (ValueError, TypeError):
        host, path, query = "", "/", None
    address = re.match(r"^[0-9.]+$|^\[[0-9a-f:]+\]$", host or "")
    if not host or not (_HOST.match(host) or address) or "." not in host:
        raise _problem("entry.not_domain", what, line, text=shown)
    if path in ("", "/") and query is None:
        return host
    return host + path + (f"?{query}" if query is not None else "")


def parse_list_text(text: str, *, what: str) -> list[str]:
    """Entries from a text box: one a line; `#` comments; every bad line named at once."""
    entries: list[str] = []
    errors: list[Problem] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.split(" #", 1)[0].strip()
        if not stripped or stripped.startswith(("#", "!")):
            continue
        try:
            entry = parse_entry(stripped, what=what, line=number)
        except ListInputError as exc:
            errors += exc.problems
            continue
        if entry not in entries:
            entries.append(entry)
    _raise_errors(errors)
    if len(entries) > MAX_ENTRIES:
        raise _problem("list.too_long", what, None, text=str(len(entries)))
    return entries


def _raise_errors(errors: list[Problem]) -> None:
    if errors:
        raise ListInputError(errors)


def parse_list_upload(data: bytes, *, filename: str = "upload") -> list[str]:
    """Entries of an uploaded list file: plain (one domain a line), hosts or AdGuard
    (`||domain^`).  Refused whole, naming the line and the fix: an empty file, UTF-16
    (Windows Notepad "Unicode"), a plain line inside an AdGuard list, a regex, bad UTF-8."""
    what = filename or "upload"
    if not data or not data.strip():
        raise _problem("upload.empty", what)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:200].count(b"\x00") > 2:
        raise _problem("upload.utf16", what)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _problem("upload.not_utf8", what, data[:exc.start].count(b"\n") + 1) from None
    lines = text.splitlines()
    meaningful = [(n, ln.strip()) for n, ln in enumerate(lines, 1)
                  if ln.strip() and not ln.strip().startswith(("#", "!", "["))]
    if not meaningful:
        raise _problem("upload.no_entries", what)
    adguard = sum(1 for _, ln in meaningful if ln.startswith("||"))
    if adguard:
        entries, errors = [], []
        for number, ln in meaningful:
            m = re.match(r"^\|\|([^\^/$|*]+)\^?(\$.*)?$", ln)
            if not m:
                errors += _problem("upload.adguard_plain", what, number, text=repr(ln),
                                   plain=ln.split()[0].strip("|^")).problems
                continue
            try:
                entry = parse_entry(m.group(1), what=what, line=number)
            except ListInputError as exc:
                errors += exc.problems
                continue
            if entry not in entries:
                entries.append(entry)
        _raise_errors(errors)
        return entries
    hosts_re = re.compile(r"^(\d{1,3}\.){3}\d{1,3}\s+|^::1?\s+")
    plain = "\n".join(hosts_re.sub("", ln) if hosts_re.match(ln) else ln for ln in lines)
    return parse_list_text(plain, what=what)


def check_category(category: str, *, line: int | None = None) -> str:
    from filters.categories import CATEGORIES

    if category not in CATEGORIES:
        raise _problem("category.unknown", "site categories" if line else "category", line,
                       text=repr(category), known=", ".join(sorted(CATEGORIES)))
    return category


def parse_site_categories(text: str) -> dict[str, list[str]]:
    """`example.kg games,social` lines → {entry: [category ids]}."""
    out: dict[str, list[str]] = {}
    errors: list[Problem] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(None, 1)
        if len(parts) != 2:
            errors += _problem("site_categories.format", "site categories", number,
                               text=repr(stripped)).problems
            continue
        try:
            entry = parse_entry(parts[0], what="site categories", line=number)
            cats = [check_category(c.strip(), line=number) for c in parts[1].replace(" ", ",").split(",")
                    if c.strip()]
        except ListInputError as exc:
            errors += exc.problems
            continue
        out[entry] = cats
    _raise_errors(errors)
    return out


def parse_bands(text: str, *, group: str) -> list[dict[str, Any]]:
    """`mon-fri 08:00-15:00` lines → time bands."""
    bands, errors = [], []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip().lower()
        if not stripped or stripped.startswith("#"):
            continue
        m = re.match(r"^([a-z]{3})(?:-([a-z]{3}))?\s+(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})$", stripped)
        if not m or m.group(1) not in DAYS or (m.group(2) and m.group(2) not in DAYS):
            errors += _problem("bands.format", "time bands", number,
                               text=f"{group}: {line.strip()!r}").problems
            continue
        first, last = DAYS[m.group(1)], DAYS[m.group(2) or m.group(1)]
        days = list(range(first, last + 1)) if first <= last else [*range(first, 7), *range(0, last + 1)]
        try:
            start, end = (f"{int(t.split(':')[0]):02d}:{t.split(':')[1]}" for t in (m.group(3), m.group(4)))
            for t in (start, end):
                h, mi = int(t[:2]), int(t[3:])
                if not (0 <= h <= 24 and 0 <= mi < 60):
                    raise ValueError
        except ValueError:
            errors += _problem("bands.format", "time bands", number,
                               text=f"{group}: {line.strip()!r}").problems
            continue
        bands.append({"days": days, "start": start, "end": end})
    _raise_errors(errors)
    return bands


def parse_holidays(text: str) -> list[str]:
    out, errors = [], []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.split("#", 1)[0].strip()
        if not stripped:
            continue
        try:
            out.append(date.fromisoformat(stripped).isoformat())
        except ValueError:
            errors += _problem("holidays.format", "holidays", number, text=repr(stripped)).problems
    _raise_errors(errors)
    return sorted(set(out))


def _names(text: str) -> list[str]:
    return [n for n in (p.strip() for p in re.split(r"[,\s]+", text or "")) if n]


# ------------------------------------------------------------------ proposals


@dataclass
class Proposal:
    kind: str
    comment: str
    clause: str
    change: Callable[[protocol.PolicyBundle], protocol.PolicyBundle]


def _groups_of(bundle: protocol.PolicyBundle) -> list[str]:
    return [g.name for g in bundle.groups]


def _need_group(bundle: protocol.PolicyBundle, group: str) -> str:
    if group not in _groups_of(bundle):
        raise InvalidInput(f"unknown group {group!r}; choose one of {', '.join(_groups_of(bundle))}")
    return group


def propose(db: Session, kind: str, form: dict[str, Any], *, upload: tuple[str, bytes] | None = None
            ) -> Proposal:
    """Build the change a form asks for; InvalidInput before anything is stored."""
    bundle = current_bundle(db)
    if kind == "matrix":
        from filters.categories import CATEGORIES

        actions: dict[str, dict[str, str]] = {}
        for g in bundle.groups:
            for cat in CATEGORIES:
                value = form.get(f"m:{g.name}:{cat}", "default")
                if value not in ("default", "allow", "block"):
                    raise InvalidInput(f"{g.name} / {cat}: {value!r} must be default, allow or block")
                if value != "default":
                    actions.setdefault(g.name, {})[cat] = value

        def change(b):
            b.filtering.category_actions = actions
            return b

        return Proposal(kind, "category × group matrix changed", "000 §8.1, 001 §3.3", change)
    if kind == "list":
        name = form.get("list", "")
        if name not in LIST_NAMES:
            raise InvalidInput(f"unknown list {name!r}; choose one of {', '.join(LIST_NAMES)}")
        group = form.get("group") or ""
        if name.startswith("group_"):
            _need_group(bundle, group)
        label, clause = LIST_NAMES[name]
        if upload is not None:
            entries = parse_list_upload(upload[1], filename=upload[0])
            if form.get("mode") == "add":
                current = (getattr(bundle.filtering, name).get(group, []) if name.startswith("group_")
                           else getattr(bundle.filtering, name))
                entries = list(dict.fromkeys([*current, *entries]))
        else:
            entries = parse_list_text(form.get("entries", ""), what=label)

        def change(b):
            if name.startswith("group_"):
                getattr(b.filtering, name)[group] = entries
            else:
                setattr(b.filtering, name, entries)
            return b

        return Proposal(kind, f"{label}{' of ' + group if group else ''}: {len(entries)} entries", clause,
                        change)
    if kind == "groups":
        groups = []
        names_seen = set()
        for i in range(int(form.get("count", "0") or 0) + 1):
            name = (form.get(f"g{i}:name") or "").strip()
            if not name:
                continue
            if not re.match(r"^[a-z0-9_-]{1,32}$", name):
                raise InvalidInput(f"group {name!r}: use lowercase letters, digits, '-', '_' (e.g. class-7a)")
            if name in names_seen:
                raise InvalidInput(f"group {name!r} is named twice")
            names_seen.add(name)
            kind_ = form.get(f"g{i}:kind", "student")
            if kind_ not in KINDS:
                raise InvalidInput(f"group {name}: kind must be one of {', '.join(KINDS)}")
            before = next((g for g in bundle.groups if g.name == name), None)
            groups.append(protocol.Group(name=name, kind=kind_,
                                         os_groups=_names(form.get(f"g{i}:os_groups", "")),
                                         os_users=_names(form.get(f"g{i}:os_users", "")),
                                         class_teacher=before.class_teacher if before else None))
        if not groups:
            raise InvalidInput("keep at least one group")
        default = form.get("default_group") or groups[0].name
        if default not in names_seen:
            raise InvalidInput(f"the default group {default!r} is not one of the groups")

        def change(b):
            b.groups = groups
            b.default_group = default
            return b

        return Proposal(kind, f"groups: {', '.join(g.name for g in groups)}", "001 §2.6", change)
    if kind == "schedule":
        schedules = {}
        unsupervised = {}
        for g in bundle.groups:
            text = form.get(f"bands:{g.name}", "")
            bands = parse_bands(text, group=g.name)
            if bands:
                schedules[g.name] = bands
            mode = form.get(f"unsupervised:{g.name}", "default")
            if mode not in (*MODES, "default"):
                raise InvalidInput(f"outside a lesson, {g.name}: {mode!r} must be one of {', '.join(MODES)}")
            if mode != "default":
                unsupervised[g.name] = mode
        holidays = parse_holidays(form.get("holidays", ""))

        def change(b):
            b.filtering.schedules = schedules
            b.filtering.unsupervised = unsupervised
            b.filtering.holidays = holidays
            return b

        return Proposal(kind, "time bands, holidays, outside a lesson", "001 §2.1, 001 §2.9", change)
    if kind == "options":
        safe = form.get("safe_search") in ("on", "1", "true")
        downloads = {}
        for g in bundle.groups:
            kinds = [k for k in DOWNLOAD_KINDS if form.get(f"dl:{g.name}:{k}")]
            if kinds:
                downloads[g.name] = kinds
        site_categories = parse_site_categories(form.get("site_categories", ""))

        def change(b):
            b.filtering.safe_search = safe
            b.filtering.download_block = downloads
            b.filtering.site_categories = site_categories
            return b

        return Proposal(kind, "SafeSearch, download kinds, site categories", "000 §8.1", change)
    if kind == "rollback":
        version = int(form.get("version") or 0)
        row = db.get(PolicyVersion, version)
        if row is None:
            raise NotFound(f"no policy version {version}")
        old = protocol.PolicyBundle.model_validate(row.bundle)

        def change(b):
            b.filtering = old.filtering.model_copy(deep=True)
            b.groups = [g.model_copy(deep=True) for g in old.groups]
            b.default_group = old.default_group
            return b

        return Proposal(kind, f"filtering rolled back to version {version}", "001 §2.6", change)
    if kind == "starting":
        from policy_server.filtering.starting import apply_starting_policy

        return Proposal(kind, "starting policy for a Kyrgyz school", "000 §8.1, 001 §3.3",
                        apply_starting_policy)
    raise InvalidInput(f"unknown change {kind!r}")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = value
    return out


def diff(old: protocol.PolicyBundle, new: protocol.PolicyBundle) -> list[dict[str, Any]]:
    """What a change does to the filtering part of the policy: one row per changed setting,
    with the list entries added and removed."""
    def part(b):
        data = b.model_dump(mode="json")
        groups = {g["name"]: {k: v for k, v in g.items() if k != "name"} for g in data["groups"]}
        return _flat({"groups": groups,
                      "default_group": data["default_group"], "filtering": data["filtering"]})

    a, b = part(old), part(new)
    rows = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key), b.get(key)
        if before == after:
            continue
        row = {"setting": key, "before": before, "after": after, "added": [], "removed": []}
        if isinstance(before, list) or isinstance(after, list):
            bl, al = before or [], after or []
            row["added"] = [x for x in al if x not in bl]
            row["removed"] = [x for x in bl if x not in al]
        rows.append(row)
    return rows


def preview(db: Session, proposal: Proposal) -> tuple[protocol.PolicyBundle, list[dict[str, Any]]]:
    current = current_bundle(db)
    changed = proposal.change(current.model_copy(deep=True))
    try:
        changed = protocol.PolicyBundle.model_validate(changed.model_dump(mode="json"))
    except ValueError as exc:
        raise InvalidInput(f"the change is not valid: {exc}") from None
    from filters.policy import FilterPolicy, PolicyError

    try:
        FilterPolicy.from_bundle(changed.model_dump(mode="json"))
    except PolicyError as exc:
        raise InvalidInput(str(exc)) from None
    return current, diff(current, changed)


def apply(db: Session, *, viewer, proposal: Proposal, base_version: int | None = None
          ) -> protocol.PolicyBundle:
    """Save a proposal (one new policy version).  `base_version`: the version the preview was
    made against; if someone changed the policy since, the person is asked to look again."""
    current = current_bundle(db)
    if base_version is not None and current.version != base_version:
        raise InvalidInput(f"the policy changed since you looked (version {base_version} → "
                           f"{current.version}); "
                           "look at the difference again and save")
    preview(db, proposal)  # the same checks as the preview
    new = amend_policy(db, actor=viewer.name, comment=f"{proposal.comment} ({proposal.clause})",
                       change=proposal.change)
    audit(db, actor=viewer.name, action=f"filtering.{proposal.kind}",
          target=f"policy:{new.version}",
          detail={"clause": proposal.clause})
    return new


def history(db: Session, limit: int = 50) -> list[PolicyVersion]:
    return list(db.scalars(select(PolicyVersion).order_by(PolicyVersion.version.desc()).limit(limit)))


def version_diff(db: Session, version: int) -> list[dict[str, Any]]:
    row = db.get(PolicyVersion, version)
    if row is None:
        raise NotFound(f"no policy version {version}")
    before = db.get(PolicyVersion, version - 1)
    old = protocol.PolicyBundle.model_validate(before.bundle) if before else protocol.PolicyBundle()
    return diff(old, protocol.PolicyBundle.model_validate(row.bundle))
