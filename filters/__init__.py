"""Kalkan's content-filtering library (pure: imports nothing of the project, no network).

Modules: `canonical` (URLs), `categories` (ids, names, clauses, UT1 mapping),
`importers` (list formats), `index` (compiled mmap index + overlay), `policy`
(FilterPolicy from a bundle), `decision` (decide / decide_host), `search`
(queries, SafeSearch), `phrases` (alert scores), `downloads` (file-type rules),
`messages` (ky/ru/en texts), `cli` (kalkan-filter).  See docs/filters.md.
"""
