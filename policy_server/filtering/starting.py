"""The starting policy for a Kyrgyz school (issue 12).

* Student groups: the categories of 000 §8.1 / 001 §3.3 blocked — harm to life and health,
  self-harm, drugs, alcohol and tobacco, violence, pornography and adult content, extremism
  and terrorism, ethnic hatred, sects, gambling — and payments (001 §3.1: payments, banks,
  crypto, shops), plus proxies/VPN (000 §5.6), malware and phishing (000 §5.5).
* Outside a lesson students get only the allow-list (001 §2.9).
* Kyrgyz and Russian educational sites on the school allow-list.  A starting point for the
  methodical council (001 §2.6), not a final list: they decide what stays.
* ISUO (in the `isuo` section) and the banks are passed through: never intercepted
  (001 §2.15), whoever may reach them.
* SafeSearch on; executables, installers, scripts and torrents not downloadable by students.
"""

from __future__ import annotations

from policy_server import protocol

STUDENT_BLOCKED = (
    "dangerous", "self_harm", "drugs", "alcohol_tobacco", "violence", "porn", "adult", "extremism", "hate",
    "sects", "gambling", "transactions", "crypto", "shopping", "dating", "proxies", "malware", "phishing",
)
EDUCATIONAL_KG = ("edu.gov.kg", "testing.kg", "ky.wikipedia.org", "bizdin.kg", "nlkr.gov.kg", "knu.kg")
EDUCATIONAL_RU = ("ru.wikipedia.org", "resh.edu.ru", "edu.ru", "school-collection.edu.ru", "uchi.ru",
                  "yaklass.ru", "interneturok.ru", "foxford.ru")
EDUCATIONAL_OTHER = ("en.wikipedia.org", "khanacademy.org")
BANKS_KG = ("nbkr.kg", "mbank.kg", "optimabank.kg", "demirbank.kg", "kicb.net", "bakai.kg", "rsk.kg",
            "ayilbank.kg")
ISUO_HOSTS = ("emis.edu.gov.kg",)
STUDENT_DOWNLOADS_BLOCKED = ("executable", "installer", "script", "torrent")


def apply_starting_policy(bundle: protocol.PolicyBundle) -> protocol.PolicyBundle:
    """The starting policy laid over `bundle` (its groups stay; lists are merged, not replaced)."""
    f = bundle.filtering
    students = [g.name for g in bundle.groups if g.kind == protocol.GroupKind.student]
    for group in students:
        actions = f.category_actions.setdefault(group, {})
        for cat in STUDENT_BLOCKED:
            actions[cat] = "block"
        f.unsupervised.setdefault(group, protocol.LessonMode.allow_list)
        kinds = f.download_block.setdefault(group, [])
        kinds += [k for k in STUDENT_DOWNLOADS_BLOCKED if k not in kinds]
    f.allow_list = list(dict.fromkeys([*f.allow_list, *EDUCATIONAL_KG, *EDUCATIONAL_RU, *EDUCATIONAL_OTHER]))
    f.passthrough_hosts = list(dict.fromkeys([*f.passthrough_hosts, *BANKS_KG]))
    bundle.isuo.hosts = list(dict.fromkeys([*bundle.isuo.hosts, *ISUO_HOSTS]))
    f.safe_search = True
    return bundle
