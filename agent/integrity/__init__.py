"""Software integrity of the workstation (000 §4.2, §6.5).

Pure core:  `model` (what a file's record is, the baseline digest), `diff` (what
changed and how: added / modified / removed / permissions), `policy` (the
options the policy bundle gives, checked where they are loaded).
Thin edges: `scan` (walk the program folders, fast path on unchanged metadata),
`hasher` (SHA-256 on every core, in `hashworker` processes), `packages`
(dpkg/snap/flatpak inventory and "did the package manager do this"), `store`
(the root-only, tamper-evident baseline), `watch` (inotify real-time watch), `engine` (glue used by the
collector and the CLI), `cli` (`kalkan-agent integrity baseline|check`).
"""
